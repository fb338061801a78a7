//! The one drawing routine behind every plot: titled panels of x-y data with linear or log axes,
//! scatter markers, lines, shaded bands, reference rules and a legend beside each panel.
//!
//! Log axes are drawn on a linear coordinate system over log10 of the data, with tick positions
//! computed here, so one code path serves every combination of scales. Everything drawn is
//! clipped to the visible rectangle by hand (plotters does not clip elements).

use super::FONT;
use plotters::coord::Shift;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use std::ops::Range;

/// A linear coordinate with tick positions chosen here (bold ones labelled, light ones only
/// gridlines).
struct Ticked {
    inner: RangedCoordf64,
    bold: Vec<f64>,
    light: Vec<f64>,
}

impl Ranged for Ticked {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        self.inner.map(v, limit)
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            self.light.clone()
        } else {
            self.bold.clone()
        }
    }

    fn range(&self) -> Range<f64> {
        self.inner.range()
    }
}

/// A whole figure: a title, notes under it, and panels stacked vertically.
pub(crate) struct Plot {
    pub title: String,
    /// Lines of small grey text under the title (data provenance, what was left out).
    pub notes: Vec<String>,
    pub panels: Vec<Panel>,
    pub width: u32,
    pub panel_height: u32,
}

impl Plot {
    pub fn new(title: impl Into<String>) -> Plot {
        Plot {
            title: title.into(),
            notes: Vec::new(),
            panels: Vec::new(),
            width: 960,
            panel_height: 520,
        }
    }

    fn header_height(&self) -> u32 {
        46 + 20 * self.notes.len() as u32
    }

    pub fn size(&self) -> (u32, u32) {
        (
            self.width,
            self.header_height() + self.panel_height * self.panels.len().max(1) as u32,
        )
    }
}

/// One axis.
pub(crate) struct Axis {
    /// Description with its unit, e.g. "prompt length (tokens)".
    pub label: String,
    pub log: bool,
    /// Fixed range in data units; `None`: fitted to the data.
    pub range: Option<(f64, f64)>,
    /// A fitted linear range starts at zero (when the data are non-negative).
    pub from_zero: bool,
    /// Named positions 0, 1, 2, ...: a categorical axis (linear, one labelled tick per name).
    pub categories: Vec<String>,
    /// Preferred labelled ticks (data units), e.g. a sweep's values; used when they do not
    /// crowd each other.
    pub ticks_at: Vec<f64>,
}

impl Axis {
    pub fn new(label: impl Into<String>) -> Axis {
        Axis {
            label: label.into(),
            log: false,
            range: None,
            from_zero: false,
            categories: Vec::new(),
            ticks_at: Vec::new(),
        }
    }

    pub fn log(mut self, log: bool) -> Axis {
        self.log = log;
        self
    }

    pub fn zero_based(mut self) -> Axis {
        self.from_zero = true;
        self
    }

    pub fn range(mut self, lo: f64, hi: f64) -> Axis {
        self.range = Some((lo, hi));
        self
    }

    fn to(&self, v: f64) -> Option<f64> {
        if !v.is_finite() {
            return None;
        }
        if self.log {
            (v > 0.0).then(|| v.log10())
        } else {
            Some(v)
        }
    }

    fn from(&self, t: f64) -> f64 {
        if self.log { 10f64.powf(t) } else { t }
    }
}

/// Marker shapes, in the order series get them.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Marker {
    Circle,
    Triangle,
    Square,
    Cross,
}

pub(crate) const MARKERS: [Marker; 4] = [
    Marker::Circle,
    Marker::Triangle,
    Marker::Square,
    Marker::Cross,
];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Line {
    None,
    Solid,
    Dashed,
}

/// A set of points drawn with markers, a line, or both.
pub(crate) struct Series {
    pub label: String,
    pub color: RGBColor,
    pub marker: Option<Marker>,
    /// Filled markers (else outlines).
    pub filled: bool,
    pub line: Line,
    pub points: Vec<(f64, f64)>,
    /// Whether the points take part in fitting the axis ranges.
    pub fit_range: bool,
}

impl Series {
    pub fn scatter(label: impl Into<String>, color: RGBColor, marker: Marker) -> Series {
        Series {
            label: label.into(),
            color,
            marker: Some(marker),
            filled: true,
            line: Line::None,
            points: Vec::new(),
            fit_range: true,
        }
    }

    pub fn line(label: impl Into<String>, color: RGBColor, marker: Option<Marker>) -> Series {
        Series {
            label: label.into(),
            color,
            marker,
            filled: true,
            line: Line::Solid,
            points: Vec::new(),
            fit_range: true,
        }
    }
}

/// A shaded polygon (data coordinates).
pub(crate) struct Band {
    pub label: String,
    pub color: RGBColor,
    pub polygon: Vec<(f64, f64)>,
}

/// A dashed reference line across the whole panel.
pub(crate) struct Rule {
    pub label: String,
    pub color: RGBColor,
    pub at: f64,
    pub vertical: bool,
}

/// One chart.
pub(crate) struct Panel {
    /// Caption above the chart (for figures with several panels).
    pub title: Option<String>,
    pub x: Axis,
    pub y: Axis,
    pub series: Vec<Series>,
    pub bands: Vec<Band>,
    pub rules: Vec<Rule>,
    /// Heading of the legend column.
    pub legend_title: Option<String>,
}

impl Panel {
    pub fn new(x: Axis, y: Axis) -> Panel {
        Panel {
            title: None,
            x,
            y,
            series: Vec::new(),
            bands: Vec::new(),
            rules: Vec::new(),
            legend_title: None,
        }
    }
}

/// Colour-blind-safe colours (Okabe and Ito), in the order series get them.
pub(crate) const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(60, 60, 60),
    RGBColor(180, 160, 20),
];

pub(crate) const GREY: RGBColor = RGBColor(110, 110, 110);
pub(crate) const SLO_RED: RGBColor = RGBColor(200, 30, 30);

/// The `i`th series' colour and marker: colours cycle first, then markers, so the first 32
/// series differ in at least one of them.
pub(crate) fn style_of(i: usize) -> (RGBColor, Marker) {
    (
        PALETTE[i % PALETTE.len()],
        MARKERS[(i + i / PALETTE.len()) % MARKERS.len()],
    )
}

/// A number as a tick label: at most 3 significant digits, `k`/`M` above 10,000.
pub(crate) fn fmt_num(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return if v.is_finite() {
            "0".into()
        } else {
            "-".into()
        };
    }
    let a = v.abs();
    let (x, suffix) = if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e4 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let mag = x.abs().log10().floor() as i32;
    let decimals = (2 - mag).clamp(0, 8) as usize;
    let mut s = format!("{x:.decimals$}");
    if s.contains('.') {
        s = s.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    if s == "-0" {
        s = "0".into();
    }
    s + suffix
}

/// Bold (labelled) and light tick positions in axis coordinates for the range `[lo, hi]`
/// (log10 of the data on a log axis).
fn ticks(axis: &Axis, lo: f64, hi: f64) -> (Vec<f64>, Vec<f64>) {
    if !axis.categories.is_empty() {
        return (
            (0..axis.categories.len()).map(|i| i as f64).collect(),
            Vec::new(),
        );
    }
    if let Some(t) = preferred(axis, lo, hi) {
        let light = if axis.log {
            ticks(&Axis::new("").log(true), lo, hi).1
        } else {
            Vec::new()
        };
        return (t, light);
    }
    if axis.log {
        let span = hi - lo;
        let in_range = |t: f64| t >= lo - 1e-9 && t <= hi + 1e-9;
        let decades = (lo.floor() as i32)..=(hi.ceil() as i32);
        let with = |mults: &[f64]| -> Vec<f64> {
            decades
                .clone()
                .flat_map(|d| mults.iter().map(move |m| d as f64 + m.log10()))
                .filter(|t| in_range(*t))
                .collect()
        };
        let all: Vec<f64> = with(&[1., 2., 3., 4., 5., 6., 7., 8., 9.]);
        let bold = if span >= 3.2 {
            let step = (span / 8.0).ceil().max(1.0) as i32;
            decades
                .clone()
                .filter(|d| d.rem_euclid(step) == 0)
                .map(f64::from)
                .filter(|t| in_range(*t))
                .collect()
        } else if span >= 0.7 {
            with(&[1., 2., 5.])
        } else {
            all.clone()
        };
        if bold.len() >= 2 {
            let light = if span <= 5.0 {
                all.into_iter().filter(|t| !bold.contains(t)).collect()
            } else {
                Vec::new()
            };
            return (bold, light);
        }
        // Under a factor of two: evenly spaced values, placed at their logarithms.
        let (a, b) = (axis.from(lo), axis.from(hi));
        let lin = linear_ticks(a, b);
        return (
            lin.into_iter()
                .filter(|v| *v > 0.0)
                .map(f64::log10)
                .filter(|t| in_range(*t))
                .collect(),
            Vec::new(),
        );
    }
    (linear_ticks(lo, hi), Vec::new())
}

/// The axis' preferred ticks in axis coordinates, when there are 2 to 12 of them in range and
/// no two are closer than 1/14 of the axis.
fn preferred(axis: &Axis, lo: f64, hi: f64) -> Option<Vec<f64>> {
    let mut t: Vec<f64> = axis
        .ticks_at
        .iter()
        .filter_map(|v| axis.to(*v))
        .filter(|t| *t >= lo && *t <= hi)
        .collect();
    t.sort_by(f64::total_cmp);
    t.dedup();
    let ok = (2..=12).contains(&t.len()) && t.windows(2).all(|w| w[1] - w[0] >= (hi - lo) / 14.0);
    ok.then_some(t)
}

/// About six round values in `[lo, hi]`.
fn linear_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = hi - lo;
    if span <= 0.0 || !span.is_finite() {
        return vec![lo];
    }
    let raw = span / 6.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= 8.0)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|k| k as f64 * step).collect()
}

/// The visible range of an axis in axis coordinates, from the values it must show.
fn fit(axis: &Axis, values: impl Iterator<Item = f64>) -> (f64, f64) {
    if !axis.categories.is_empty() {
        return (-0.5, axis.categories.len() as f64 - 0.5);
    }
    if let Some((a, b)) = axis.range
        && let (Some(a), Some(b)) = (axis.to(a), axis.to(b))
    {
        return (a, b);
    }
    let vs: Vec<f64> = values.filter_map(|v| axis.to(v)).collect();
    let (mut lo, mut hi) = match (
        vs.iter().copied().min_by(f64::total_cmp),
        vs.iter().copied().max_by(f64::total_cmp),
    ) {
        (Some(a), Some(b)) => (a, b),
        _ => return if axis.log { (-1.0, 1.0) } else { (0.0, 1.0) },
    };
    if axis.log {
        if hi - lo < 0.3 {
            let mid = (hi + lo) / 2.0;
            lo = mid - 0.15;
            hi = mid + 0.15;
        }
        let pad = (hi - lo) * 0.06;
        return (lo - pad, hi + pad);
    }
    if hi == lo {
        let d = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        lo -= d;
        hi += d;
    }
    let pad = (hi - lo) * 0.06;
    let zero = axis.from_zero && lo >= 0.0;
    (if zero { 0.0 } else { lo - pad }, hi + pad)
}

type Rect = (f64, f64, f64, f64);

/// Clips segment `a`-`b` to `r` (Liang-Barsky).
fn clip_segment(a: (f64, f64), b: (f64, f64), r: Rect) -> Option<((f64, f64), (f64, f64))> {
    let (x0, x1, y0, y1) = r;
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let (mut t0, mut t1) = (0.0f64, 1.0f64);
    for (p, q) in [
        (-dx, a.0 - x0),
        (dx, x1 - a.0),
        (-dy, a.1 - y0),
        (dy, y1 - a.1),
    ] {
        if p == 0.0 {
            if q < 0.0 {
                return None;
            }
        } else {
            let t = q / p;
            if p < 0.0 {
                t0 = t0.max(t);
            } else {
                t1 = t1.min(t);
            }
        }
    }
    (t0 <= t1).then_some((
        (a.0 + t0 * dx, a.1 + t0 * dy),
        (a.0 + t1 * dx, a.1 + t1 * dy),
    ))
}

/// Splits a polyline into the runs of it inside `r`.
fn clip_polyline(points: &[(f64, f64)], r: Rect) -> Vec<Vec<(f64, f64)>> {
    let mut out: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut cur: Vec<(f64, f64)> = Vec::new();
    for w in points.windows(2) {
        match clip_segment(w[0], w[1], r) {
            Some((a, b)) => {
                if cur.last() != Some(&a) {
                    if cur.len() >= 2 {
                        out.push(std::mem::take(&mut cur));
                    }
                    cur.clear();
                    cur.push(a);
                }
                cur.push(b);
            }
            None => {
                if cur.len() >= 2 {
                    out.push(std::mem::take(&mut cur));
                }
                cur.clear();
            }
        }
    }
    if cur.len() >= 2 {
        out.push(cur);
    }
    out
}

/// Clips a convex polygon to `r` (Sutherland-Hodgman).
fn clip_polygon(poly: &[(f64, f64)], r: Rect) -> Vec<(f64, f64)> {
    let (x0, x1, y0, y1) = r;
    type Edge = (
        fn((f64, f64), f64) -> bool,
        fn((f64, f64), (f64, f64), f64) -> (f64, f64),
    );
    let lerp_x = |a: (f64, f64), b: (f64, f64), x: f64| {
        let t = (x - a.0) / (b.0 - a.0);
        (x, a.1 + t * (b.1 - a.1))
    };
    let lerp_y = |a: (f64, f64), b: (f64, f64), y: f64| {
        let t = (y - a.1) / (b.1 - a.1);
        (a.0 + t * (b.0 - a.0), y)
    };
    let edges: [(Edge, f64); 4] = [
        ((|p, v| p.0 >= v, lerp_x), x0),
        ((|p, v| p.0 <= v, lerp_x), x1),
        ((|p, v| p.1 >= v, lerp_y), y0),
        ((|p, v| p.1 <= v, lerp_y), y1),
    ];
    let mut pts = poly.to_vec();
    for ((inside, cut), v) in edges {
        if pts.is_empty() {
            break;
        }
        let input = std::mem::take(&mut pts);
        for i in 0..input.len() {
            let cur = input[i];
            let prev = input[(i + input.len() - 1) % input.len()];
            match (inside(cur, v), inside(prev, v)) {
                (true, true) => pts.push(cur),
                (true, false) => {
                    pts.push(cut(prev, cur, v));
                    pts.push(cur);
                }
                (false, true) => pts.push(cut(prev, cur, v)),
                (false, false) => {}
            }
        }
    }
    pts
}

type DrawResult = Result<(), String>;

fn e<E: std::error::Error + Send + Sync>(err: DrawingAreaErrorKind<E>) -> String {
    err.to_string()
}

/// Draws `plot` on `root`.
pub(crate) fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, plot: &Plot) -> DrawResult {
    root.fill(&WHITE).map_err(e)?;
    let title = TextStyle::from((FONT, 26).into_font().style(FontStyle::Bold)).color(&BLACK);
    root.draw_text(&plot.title, &title, (16, 12)).map_err(e)?;
    let note = TextStyle::from((FONT, 16).into_font()).color(&GREY);
    for (i, n) in plot.notes.iter().enumerate() {
        root.draw_text(n, &note, (16, 42 + 20 * i as i32))
            .map_err(e)?;
    }
    let (_, body) = root.split_vertically(plot.header_height());
    let n = plot.panels.len().max(1);
    let areas = body.split_evenly((n, 1));
    for (p, area) in plot.panels.iter().zip(&areas) {
        draw_panel(area, p)?;
    }
    Ok(())
}

/// A legend entry's sample.
enum Sample<'a> {
    Series(&'a Series),
    Band(RGBColor),
    Rule(RGBColor),
}

fn legend_entries(p: &Panel) -> Vec<(String, Sample<'_>)> {
    let mut v: Vec<(String, Sample)> = Vec::new();
    for s in p.series.iter().filter(|s| !s.label.is_empty()) {
        v.push((s.label.clone(), Sample::Series(s)));
    }
    for b in p.bands.iter().filter(|b| !b.label.is_empty()) {
        v.push((b.label.clone(), Sample::Band(b.color)));
    }
    for r in p.rules.iter().filter(|r| !r.label.is_empty()) {
        v.push((r.label.clone(), Sample::Rule(r.color)));
    }
    v
}

const LEGEND_FONT: u32 = 16;

/// Shortens `s` to at most `max` characters with an ellipsis.
fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        s.chars().take(max.saturating_sub(1)).collect::<String>() + "…"
    }
}

fn draw_panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, p: &Panel) -> DrawResult {
    let (w, _) = area.dim_in_pixel();
    let entries = legend_entries(p);
    let style = TextStyle::from((FONT, LEGEND_FONT).into_font()).color(&BLACK);
    let bold =
        TextStyle::from((FONT, LEGEND_FONT).into_font().style(FontStyle::Bold)).color(&BLACK);
    let max_chars = 44;
    let mut text_w = 0u32;
    for (label, _) in &entries {
        let (tw, _) = area
            .estimate_text_size(&shorten(label, max_chars), &style)
            .map_err(e)?;
        text_w = text_w.max(tw);
    }
    if let Some(t) = &p.legend_title {
        let (tw, _) = area
            .estimate_text_size(&shorten(t, max_chars), &bold)
            .map_err(e)?;
        text_w = text_w.max(tw);
    }
    let legend_w = if entries.is_empty() {
        0
    } else {
        (text_w + 56).min(w * 2 / 5)
    };
    let (chart_area, legend_area) = area.split_horizontally(w - legend_w);
    draw_chart(&chart_area, p)?;
    if entries.is_empty() {
        return Ok(());
    }
    let top = if p.title.is_some() { 46 } else { 20 };
    let mut y = top;
    if let Some(t) = &p.legend_title {
        legend_area
            .draw_text(&shorten(t, max_chars), &bold, (8, y - 8))
            .map_err(e)?;
        y += 22;
    }
    for (label, sample) in &entries {
        let (x0, cy) = (8i32, y);
        match sample {
            Sample::Series(s) => {
                if s.line != Line::None {
                    let st = s.color.stroke_width(2);
                    if s.line == Line::Dashed {
                        for k in 0..3 {
                            legend_area
                                .draw(&PathElement::new(
                                    vec![(x0 + k * 9, cy), (x0 + k * 9 + 5, cy)],
                                    st,
                                ))
                                .map_err(e)?;
                        }
                    } else {
                        legend_area
                            .draw(&PathElement::new(vec![(x0, cy), (x0 + 24, cy)], st))
                            .map_err(e)?;
                    }
                }
                if let Some(m) = s.marker {
                    draw_marker(&legend_area, (x0 + 12, cy), m, s.color, s.filled)?;
                }
            }
            Sample::Band(c) => {
                legend_area
                    .draw(&Rectangle::new(
                        [(x0, cy - 6), (x0 + 24, cy + 6)],
                        c.mix(0.18).filled(),
                    ))
                    .map_err(e)?;
            }
            Sample::Rule(c) => {
                for k in 0..3 {
                    legend_area
                        .draw(&PathElement::new(
                            vec![(x0 + k * 9, cy), (x0 + k * 9 + 5, cy)],
                            c.stroke_width(2),
                        ))
                        .map_err(e)?;
                }
            }
        }
        let pos = (x0 + 32, cy);
        let st = style.pos(plotters::style::text_anchor::Pos::new(
            plotters::style::text_anchor::HPos::Left,
            plotters::style::text_anchor::VPos::Center,
        ));
        legend_area
            .draw_text(&shorten(label, max_chars), &st, pos)
            .map_err(e)?;
        y += 22;
    }
    Ok(())
}

/// A marker at a backend (pixel) position.
fn draw_marker<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    at: (i32, i32),
    m: Marker,
    color: RGBColor,
    filled: bool,
) -> DrawResult {
    let st = if filled {
        color.mix(0.75).filled()
    } else {
        color.stroke_width(2)
    };
    match m {
        Marker::Circle => area.draw(&Circle::new(at, 4, st)),
        Marker::Triangle => area.draw(&TriangleMarker::new(at, 5, st)),
        Marker::Square => area.draw(&Rectangle::new(
            [(at.0 - 4, at.1 - 4), (at.0 + 4, at.1 + 4)],
            st,
        )),
        Marker::Cross => area.draw(&Cross::new(at, 4, color.stroke_width(2))),
    }
    .map_err(e)
}

fn draw_chart<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, p: &Panel) -> DrawResult {
    let fit_pts = || {
        p.series
            .iter()
            .filter(|s| s.fit_range)
            .flat_map(|s| &s.points)
    };
    let (x0, x1) = fit(
        &p.x,
        fit_pts()
            .map(|q| q.0)
            .chain(p.rules.iter().filter(|r| r.vertical).map(|r| r.at)),
    );
    let (y0, y1) = fit(
        &p.y,
        fit_pts()
            .map(|q| q.1)
            .chain(p.rules.iter().filter(|r| !r.vertical).map(|r| r.at)),
    );
    let rect = (x0, x1, y0, y1);
    let (xb, xl) = ticks(&p.x, x0, x1);
    let (yb, yl) = ticks(&p.y, y0, y1);
    let mut builder = ChartBuilder::on(area);
    builder
        .margin_top(if p.title.is_some() { 8 } else { 16 })
        .margin_left(12)
        .margin_right(24)
        .margin_bottom(8)
        .x_label_area_size(52)
        .y_label_area_size(78);
    if let Some(t) = &p.title {
        builder.caption(t, (FONT, 19).into_font().style(FontStyle::Bold));
    }
    let mut chart = builder
        .build_cartesian_2d(
            Ticked {
                inner: (x0..x1).into(),
                bold: xb,
                light: xl,
            },
            Ticked {
                inner: (y0..y1).into(),
                bold: yb,
                light: yl,
            },
        )
        .map_err(e)?;
    let label = |a: &Axis, v: f64| {
        if a.categories.is_empty() {
            fmt_num(a.from(v))
        } else {
            a.categories
                .get(v.round().max(0.0) as usize)
                .cloned()
                .unwrap_or_default()
        }
    };
    let xf = |v: &f64| label(&p.x, *v);
    let yf = |v: &f64| label(&p.y, *v);
    let mut mesh = chart.configure_mesh();
    if !p.x.categories.is_empty() {
        // Separators between categories instead of lines through them.
        mesh.disable_x_mesh();
    }
    mesh.x_desc(p.x.label.as_str())
        .y_desc(p.y.label.as_str())
        .x_label_formatter(&xf)
        .y_label_formatter(&yf)
        .label_style((FONT, 16))
        .axis_desc_style((FONT, 18))
        .bold_line_style(RGBColor(200, 200, 200).stroke_width(1))
        .light_line_style(RGBColor(236, 236, 236).stroke_width(1))
        .draw()
        .map_err(e)?;
    for i in 1..p.x.categories.len() {
        let x = i as f64 - 0.5;
        chart
            .draw_series(LineSeries::new(
                vec![(x, y0), (x, y1)],
                RGBColor(200, 200, 200).stroke_width(1),
            ))
            .map_err(e)?;
    }
    let tr = |(x, y): (f64, f64)| Some((p.x.to(x)?, p.y.to(y)?));
    for b in &p.bands {
        let poly: Vec<_> = b.polygon.iter().filter_map(|q| tr(*q)).collect();
        let poly = clip_polygon(&poly, rect);
        if poly.len() >= 3 {
            chart
                .draw_series(std::iter::once(Polygon::new(
                    poly,
                    b.color.mix(0.15).filled(),
                )))
                .map_err(e)?;
        }
    }
    for r in &p.rules {
        let pts = if r.vertical {
            p.x.to(r.at).map(|x| vec![(x, y0), (x, y1)])
        } else {
            p.y.to(r.at).map(|y| vec![(x0, y), (x1, y)])
        };
        if let Some(pts) = pts {
            for run in clip_polyline(&pts, rect) {
                chart
                    .draw_series(DashedLineSeries::new(run, 7, 5, r.color.stroke_width(2)))
                    .map_err(e)?;
            }
        }
    }
    for s in &p.series {
        let pts: Vec<(f64, f64)> = s.points.iter().filter_map(|q| tr(*q)).collect();
        if s.line != Line::None {
            for run in clip_polyline(&pts, rect) {
                let st = s.color.stroke_width(2);
                if s.line == Line::Dashed {
                    chart
                        .draw_series(DashedLineSeries::new(run, 7, 5, st))
                        .map_err(e)?;
                } else {
                    chart.draw_series(LineSeries::new(run, st)).map_err(e)?;
                }
            }
        }
        let Some(m) = s.marker else { continue };
        let inside = pts
            .into_iter()
            .filter(|&(x, y)| x >= x0 && x <= x1 && y >= y0 && y <= y1);
        let st = if s.filled {
            s.color.mix(0.7).filled()
        } else {
            s.color.stroke_width(2)
        };
        let plotting = chart.plotting_area();
        for q in inside {
            match m {
                Marker::Circle => plotting.draw(&Circle::new(q, 4, st)),
                Marker::Triangle => plotting.draw(&TriangleMarker::new(q, 5, st)),
                Marker::Square => {
                    plotting.draw(&(EmptyElement::at(q) + Rectangle::new([(-4, -4), (4, 4)], st)))
                }
                Marker::Cross => plotting.draw(&Cross::new(q, 4, s.color.stroke_width(2))),
            }
            .map_err(e)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_format_compactly() {
        assert_eq!(fmt_num(0.0), "0");
        assert_eq!(fmt_num(0.25), "0.25");
        assert_eq!(fmt_num(0.001), "0.001");
        assert_eq!(fmt_num(2.0), "2");
        assert_eq!(fmt_num(12.5), "12.5");
        assert_eq!(fmt_num(150.0), "150");
        assert_eq!(fmt_num(10_000.0), "10k");
        assert_eq!(fmt_num(12_500.0), "12.5k");
        assert_eq!(fmt_num(3e6), "3M");
    }

    #[test]
    fn log_ticks_follow_the_span() {
        let a = Axis::new("").log(true);
        let (b, _) = ticks(&a, -2.0, 2.0);
        assert_eq!(b, vec![-2.0, -1.0, 0.0, 1.0, 2.0]);
        let (b, _) = ticks(&a, -2.0, 1.0);
        assert_eq!(b.len(), 10); // 0.01, 0.02, 0.05, ..., 10
        let (b, _) = ticks(&a, 0.0, 0.9);
        assert_eq!(b.len(), 3); // 1, 2, 5
        let (b, _) = ticks(&a, 0.01, 0.2);
        assert!(b.len() >= 2, "{b:?}");
    }

    #[test]
    fn clipping_keeps_the_inside() {
        let r = (0.0, 1.0, 0.0, 1.0);
        let s = clip_segment((-1.0, -1.0), (2.0, 2.0), r).unwrap();
        assert_eq!(s, ((0.0, 0.0), (1.0, 1.0)));
        assert!(clip_segment((2.0, 0.0), (3.0, 1.0), r).is_none());
        let p = clip_polygon(&[(-1.0, -1.0), (2.0, -1.0), (2.0, 2.0), (-1.0, 2.0)], r);
        assert_eq!(p.len(), 4);
    }
}
