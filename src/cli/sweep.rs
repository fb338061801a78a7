//! `kvreplay sweep`.

use super::sim_args::SimArgs;
use anyhow::{Context, Result};
use kvreplay::sweep::{Grid, Shard, SweepPoint, output, run_grid};
use kvreplay::trace;
use std::path::{Path, PathBuf};

/// Runs a grid (or this shard of it) and writes the points; prints them sorted by `sort_by`.
pub fn sweep(
    trace_path: &Path,
    sets: &[String],
    grid_file: Option<&Path>,
    sim: &SimArgs,
    shard: Option<&str>,
    sort_by: &str,
    out: &Path,
) -> Result<()> {
    // Checked before anything runs.
    kvreplay::sweep::known_metric("--sort-by", sort_by)?;
    let t = trace::read(trace_path)?;
    let (base, notes) = sim.run_config()?;
    for n in notes {
        eprintln!("note: {n}");
    }
    let mut grid = Grid::default();
    if let Some(f) = grid_file {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        let name = f.display().to_string();
        let map = kvreplay::config::parse_key_file(&text, &name)?;
        grid.add_object(&map)
            .with_context(|| format!("in {name}"))?;
    }
    for s in sets {
        grid.add_arg(s)?;
    }
    anyhow::ensure!(
        !grid.axes.is_empty(),
        "give the grid with --set KEY=V1,V2,... or --grid FILE"
    );
    let shard = shard.map(Shard::parse).transpose()?.unwrap_or(Shard::ALL);
    let mine = (0..grid.len()).filter(|i| shard.owns(*i)).count();
    eprintln!(
        "sweep: {} points in the grid ({}), {} in shard {}/{}, on {} threads",
        grid.len(),
        grid.axes
            .iter()
            .map(|(k, v)| format!("{k} x{}", v.len()))
            .collect::<Vec<_>>()
            .join(", "),
        mine,
        shard.k,
        shard.n,
        rayon::current_num_threads()
    );
    let t0 = std::time::Instant::now();
    // A bar on a terminal once the sweep has taken a second; nothing on a pipe or in CI.
    let bar = std::sync::Mutex::new(kvreplay::util::progress::Progress::new("sweep", None));
    let progress = |done: usize, total: usize| {
        if let Ok(mut b) = bar.lock() {
            b.set_total(total as u64);
            b.set(done as u64);
        }
    };
    let points = run_grid(&t, &base, &grid, shard, &progress)?;
    if let Ok(mut b) = bar.lock() {
        b.finish();
    }
    let path = output::write_points(out, &grid, shard, &points)?;
    print_sorted(&points, &grid, sort_by);
    println!(
        "wrote {} ({} points, {:.2} s); read all shards with DuckDB: SELECT * FROM read_parquet('{}/*/*.parquet', hive_partitioning = true)",
        path.display(),
        points.len(),
        t0.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(())
}

fn print_sorted(points: &[SweepPoint], grid: &Grid, sort_by: &str) {
    let mut sorted: Vec<&SweepPoint> = points.iter().collect();
    sorted.sort_by(|a, b| {
        let (x, y) = (a.metrics.get(sort_by), b.metrics.get(sort_by));
        match (x, y) {
            (Some(x), Some(y)) => x.total_cmp(y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => a.index.cmp(&b.index),
        }
    });
    let cols = ["ttft_p99_s", "tpot_mean_s", "output_tps", "hit_rate_total"];
    let mut head = format!("{:>5}", "point");
    for (k, _) in &grid.axes {
        head += &format!(" {k:>14}");
    }
    head += &format!(" {:>12}", format!("*{sort_by}"));
    for c in cols.iter().filter(|c| **c != sort_by) {
        head += &format!(" {c:>14}");
    }
    println!("{head}");
    for p in sorted {
        let mut line = format!("{:>5}", p.index);
        for (k, _) in &grid.axes {
            let v = &p.params[k];
            line += &format!(
                " {:>14}",
                v.as_str()
                    .map(String::from)
                    .unwrap_or_else(|| v.to_string())
            );
        }
        let f = |m: &str| {
            p.metrics
                .get(m)
                .map(|v| format!("{v:.4}"))
                .unwrap_or_else(|| "-".into())
        };
        line += &format!(" {:>12}", f(sort_by));
        for c in cols.iter().filter(|c| **c != sort_by) {
            line += &format!(" {:>14}", f(c));
        }
        println!("{line}");
    }
    println!("sorted by {sort_by} (ascending)");
}

/// Where a sweep writes by default.
pub fn default_out(trace: &Path) -> PathBuf {
    Path::new("output").join(format!(
        "sweep-{}",
        trace
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "trace".into())
    ))
}
