//! `kvreplay report`.

use anyhow::{Context, Result};
use kvreplay::report::html::{self, Options};
use std::path::{Path, PathBuf};

/// Where the page goes by default: `DIR/report.html` for a folder, the file's name with `.html`
/// for a JSON file.
fn default_out(input: &Path) -> PathBuf {
    if input.is_dir() {
        input.join("report.html")
    } else {
        input.with_extension("html")
    }
}

/// Writes one self-contained HTML page for a run, compare or sweep folder or a validation JSON.
pub fn report(
    input: &Path,
    output: Option<PathBuf>,
    slo: Option<&str>,
    plots: Option<PathBuf>,
) -> Result<()> {
    let opts = Options {
        slo: slo.map(html::parse_slo).transpose()?,
        plots: plots.clone(),
    };
    let page = html::report(input, &opts)?;
    let out = output.unwrap_or_else(|| default_out(input));
    std::fs::write(&out, page).with_context(|| format!("writing {}", out.display()))?;
    println!("wrote {}", out.display());
    if let Some(p) = plots {
        println!("wrote the plots as PNG and SVG into {}", p.display());
    }
    Ok(())
}
