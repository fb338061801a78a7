//! Plots of runs, comparisons, sweeps and validations, as PNG and SVG.
//!
//! Every plot is a [`Figure`]: the same drawing rendered twice, once as SVG text and once as an
//! RGB bitmap encoded as PNG. Text is laid out (and, in the PNG, rasterised) with DejaVu Sans
//! embedded in the binary, so no system font is needed, and nothing depends on the clock or on
//! hash-map order: the same inputs give byte-identical files.
//!
//! | function | shows |
//! |---|---|
//! | [`ttft_vs_prompt`], [`e2e_vs_prompt`] | per-request latency against prompt length, one series per run |
//! | [`ttft_vs_rtt`] | a TTFT metric of a sweep against the Redis round-trip time |
//! | [`metric_vs_param`] | any sweep metric against any numeric sweep parameter |
//! | [`hit_rate_vs_cpu`] | prompt tokens served by each tier against the CPU tier's size |
//! | [`throughput_vs_qps`] | throughput and an SLO metric against the offered request rate |
//! | [`predicted_vs_measured`] | validation: kvreplay's predictions against measurements |

mod chart;
pub mod labels;
mod prompt;
mod raster;
mod replicas;
mod sweep;
mod throughput;
mod validation;

#[cfg(test)]
mod tests;

pub use prompt::{e2e_vs_prompt, ttft_vs_prompt};
pub use replicas::replica_load;
pub(crate) use sweep::{CPU_PARAMS, num as sweep_param_num, varying as sweep_varying};
pub use sweep::{hit_rate_vs_cpu, metric_vs_param, ttft_vs_rtt};
pub(crate) use throughput::RATE_PARAMS;
pub use throughput::{Slo, throughput_vs_qps};
pub use validation::{ValidationPoint, predicted_vs_measured, validation_points};

/// Points of a sweep grouped by every varying parameter except `x`: `(label, points)`.
pub(crate) fn sweep_groups<'a>(
    points: &'a [crate::sweep::SweepPoint],
    x: &str,
) -> Vec<(String, Vec<&'a crate::sweep::SweepPoint>)> {
    sweep::group_by_others(points, x)
        .into_iter()
        .map(|g| (g.label, g.points))
        .collect()
}

use crate::error::{Error, Result};
use plotters::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::Once;

/// The font family every text element uses; registered with DejaVu Sans on first use.
pub(crate) const FONT: &str = "sans-serif";

static FONT_ONCE: Once = Once::new();

/// Registers the embedded DejaVu Sans (regular and bold) as [`FONT`].
fn register_fonts() {
    FONT_ONCE.call_once(|| {
        // The embedded files are valid TrueType: a failure here is a packaging bug.
        let ok = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
            .is_ok()
            && plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold()).is_ok();
        assert!(ok, "the embedded DejaVu Sans font does not parse");
    });
}

/// One plot, rendered as SVG and as PNG.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Figure {
    /// Width in pixels (SVG user units).
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The SVG document.
    pub svg: String,
    /// The PNG file's bytes (8-bit RGB).
    pub png: Vec<u8>,
}

impl Figure {
    /// Writes `<base>.png` and `<base>.svg` (the suffixes are appended, so `out/ttft` gives
    /// `out/ttft.png` and `out/ttft.svg`) and returns their paths.
    pub fn write(&self, base: &Path) -> Result<(PathBuf, PathBuf)> {
        let with = |ext: &str| {
            let mut s = base.as_os_str().to_owned();
            s.push(ext);
            PathBuf::from(s)
        };
        let (png, svg) = (with(".png"), with(".svg"));
        if let Some(dir) = base.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display().to_string(), e))?;
        }
        std::fs::write(&png, &self.png).map_err(|e| Error::io(png.display().to_string(), e))?;
        std::fs::write(&svg, &self.svg).map_err(|e| Error::io(svg.display().to_string(), e))?;
        Ok((png, svg))
    }

    /// The SVG without its XML namespace attribute, for inlining into an HTML page (HTML needs
    /// none, and the page then references no URL at all).
    pub fn inline_svg(&self) -> String {
        self.svg
            .replacen(" xmlns=\"http://www.w3.org/2000/svg\"", "", 1)
    }
}

/// Renders `plot` to SVG and PNG.
pub(crate) fn render(plot: &chart::Plot) -> Result<Figure> {
    register_fonts();
    let (w, h) = plot.size();
    let err = |what: &str, e: String| Error::Invariant(format!("drawing {what}: {e}"));
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
        chart::draw(&root, plot).map_err(|e| err(&plot.title, e.to_string()))?;
        root.present()
            .map_err(|e| err(&plot.title, e.to_string()))?;
    }
    let mut rgb = vec![0u8; (w * h * 3) as usize];
    {
        let root = raster::Raster(BitMapBackend::with_buffer(&mut rgb, (w, h))).into_drawing_area();
        chart::draw(&root, plot).map_err(|e| err(&plot.title, e.to_string()))?;
        root.present()
            .map_err(|e| err(&plot.title, e.to_string()))?;
    }
    let png = encode_png(&rgb, w, h).map_err(|e| err(&plot.title, e.to_string()))?;
    Ok(Figure {
        width: w,
        height: h,
        svg,
        png,
    })
}

fn encode_png(rgb: &[u8], w: u32, h: u32) -> std::result::Result<Vec<u8>, png::EncodingError> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(png::Compression::Default);
        let mut wr = enc.write_header()?;
        wr.write_image_data(rgb)?;
        wr.finish()?;
    }
    Ok(out)
}
