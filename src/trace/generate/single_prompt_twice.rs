//! The study workload `single_prompt_twice`: one prompt of `input_tokens` sent, then the same
//! prompt sent again once the first has completed (the cold and the warm TTFT of one prompt).
//!
//! Here: one client (a [`Pool`] of one) sends both requests in order; the prompt is one run of
//! one content id, so the second request's prompt is the first's token for token.

use super::{Ids, bad, meta, request};
use crate::error::Result;
use crate::trace::{Pool, Run, Trace};
use serde::{Deserialize, Serialize};

/// The workload's parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    /// Prompt tokens.
    pub input_tokens: u32,
    /// Tokens generated per request.
    pub output_tokens: u32,
}

impl Default for Params {
    /// A 1,000-token prompt, one output token (TTFT is what the workload measures).
    fn default() -> Self {
        Params {
            input_tokens: 1000,
            output_tokens: 1,
        }
    }
}

/// The two requests.
pub fn generate(p: &Params, seed: u64) -> Result<Trace> {
    if p.input_tokens == 0 {
        return Err(bad("input_tokens", "must be at least 1"));
    }
    if p.output_tokens == 0 {
        return Err(bad("output_tokens", "must be at least 1"));
    }
    let content = Ids::new().fresh();
    let requests = (0..2u64)
        .map(|i| {
            let mut r = request(
                i,
                vec![Run::new(content, 0, p.input_tokens)],
                p.output_tokens,
            )?;
            r.pool = Some(0);
            r.session = Some(0);
            Ok(r)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Trace {
        meta: meta("single_prompt_twice", p, seed, vec![Pool::new(0, 1)]),
        requests,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineFlags;
    use crate::testkit::run;

    /// With steps of a fixed 10 ms, the first request prefills in one step and decodes its 4
    /// tokens by 40 ms; the second is sent then and finds the prompt cached on the GPU but for
    /// its last token (vLLM always computes it): 2,047 of 2,048 tokens, in whole 16-token
    /// blocks 2,032.
    #[test]
    fn the_second_send_follows_the_first_and_hits_its_prompt() {
        let t = generate(
            &Params {
                input_tokens: 2048,
                output_tokens: 4,
            },
            0,
        )
        .unwrap();
        assert_eq!(t.requests.len(), 2);
        let r = run(&t, EngineFlags::default());
        let (a, b) = (&r.reqs[0], &r.reqs[1]);
        let ms = |t: crate::time::SimTime| t.as_ns() / 1_000_000;
        assert_eq!((ms(a.finish.unwrap()), ms(b.arrival)), (40, 40));
        assert_eq!((a.origin.gpu, b.origin.gpu), (0, 2032));
        assert!(
            generate(
                &Params {
                    input_tokens: 0,
                    ..Params::default()
                },
                0
            )
            .is_err()
        );
    }
}
