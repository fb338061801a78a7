//! `kvreplay validate`.

use anyhow::{Context, Result};
use kvreplay::validate::{self, Options, study::Study};
use std::path::PathBuf;

/// Validates every study; writes JSON and Parquet when asked. Errors only on broken inputs.
pub fn validate(
    studies: &[PathBuf],
    json: Option<PathBuf>,
    parquet: Option<PathBuf>,
    plot: Option<PathBuf>,
    no_fit: bool,
) -> Result<()> {
    anyhow::ensure!(!studies.is_empty(), "give at least one study file");
    let opts = Options {
        fit: !no_fit,
        ..Options::default()
    };
    let mut results = Vec::new();
    for p in studies {
        let s = Study::read(p)?;
        let r = validate::validate_study(&s, &opts)?;
        print!("{}", validate::render(&r));
        results.push(r);
    }
    if let Some(j) = json {
        let v = serde_json::json!({ "studies": results });
        std::fs::write(&j, serde_json::to_string_pretty(&v)? + "\n")
            .with_context(|| format!("writing {}", j.display()))?;
        println!("wrote {}", j.display());
    }
    if let Some(base) = plot {
        #[cfg(feature = "plots")]
        {
            let points = kvreplay::plot::validation_points(&results);
            let (png, svg) = kvreplay::plot::predicted_vs_measured(&points)?.write(&base)?;
            println!("wrote {} and {}", png.display(), svg.display());
        }
        #[cfg(not(feature = "plots"))]
        {
            let _ = base;
            return Err(super::without("plots"));
        }
    }
    if let Some(pq) = parquet {
        validate::write_parquet(&results, &pq)?;
        println!("wrote {}", pq.display());
    }
    Ok(())
}
