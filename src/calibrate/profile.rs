//! The transfer-profile file `calibrate` writes and `run --profile` reads.
//!
//! One JSON file, versioned, built up section by section (`redis`, `disk`, `host`, `gpu`): each
//! section says what was measured, on what, when, keeps the raw points and the fitted model, and
//! contributes named parameters of [`crate::cost::TransferProfile`]. The top-level `params` and
//! `param_sources` are the merged view the simulator reads. Writes go to a temporary file that is
//! renamed into place, so an interrupted calibration never leaves a half-written profile.

use crate::error::{Error, InputError, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// Version of the profile format.
pub const PROFILE_VERSION: u32 = 1;

/// The machine a calibration ran on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// CPU model name.
    pub cpu: String,
    /// Logical CPUs.
    pub cpus: usize,
    /// Kernel release.
    pub kernel: String,
    /// Physical memory, GiB.
    pub memory_gib: f64,
}

impl Machine {
    /// Reads this machine's description from /proc (fields left empty where unavailable).
    pub fn this() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default();
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        let memory_gib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| {
                        l.split_whitespace()
                            .nth(1)
                            .and_then(|k| k.parse::<f64>().ok())
                    })
            })
            .map(|kb| kb / (1024.0 * 1024.0))
            .unwrap_or(0.0);
        Machine {
            cpu,
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            kernel,
            memory_gib: (memory_gib * 10.0).round() / 10.0,
        }
    }
}

/// One calibration's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Section {
    /// What was measured, in words (tool, target, versions).
    pub what: String,
    /// When (UTC, ISO 8601).
    pub when: String,
    /// The raw measurements.
    pub points: Value,
    /// The fitted model and its error.
    pub fit: Value,
    /// Transfer-profile parameters this calibration determines.
    pub params: BTreeMap<String, f64>,
    /// Relative standard deviation of each parameter (measurement spread and fit error), for
    /// prediction intervals.
    #[serde(default)]
    pub spread: BTreeMap<String, f64>,
}

/// A whole profile file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileFile {
    /// [`PROFILE_VERSION`].
    pub kvreplay_profile: u32,
    /// The machine of the latest calibration.
    pub machine: Machine,
    /// Calibrations by name.
    pub sections: BTreeMap<String, Section>,
    /// Merged parameters (what `run --profile` reads).
    pub params: BTreeMap<String, f64>,
    /// For each parameter, the section and time it came from.
    pub param_sources: BTreeMap<String, String>,
    /// Relative standard deviation per parameter, where the calibration could tell.
    #[serde(default)]
    pub param_spread: BTreeMap<String, f64>,
}

/// Now as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn now_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

impl ProfileFile {
    /// An empty profile for this machine.
    pub fn new() -> Self {
        ProfileFile {
            kvreplay_profile: PROFILE_VERSION,
            machine: Machine::this(),
            sections: BTreeMap::new(),
            params: BTreeMap::new(),
            param_sources: BTreeMap::new(),
            param_spread: BTreeMap::new(),
        }
    }

    /// Reads a profile file.
    pub fn read(path: &Path) -> Result<Self> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(&name, e))?;
        Self::parse(&text, &name)
    }

    /// Parses a profile file's text; `name` names it in errors.
    pub fn parse(text: &str, name: &str) -> Result<Self> {
        let p: ProfileFile = serde_json::from_str(text).map_err(|e| {
            InputError::new(
                name,
                e.line() as u64,
                "",
                format!("not a kvreplay profile: {e}"),
            )
        })?;
        if p.kvreplay_profile != PROFILE_VERSION {
            return Err(InputError::new(
                name,
                0,
                "kvreplay_profile",
                format!("version {} is not {PROFILE_VERSION}", p.kvreplay_profile),
            )
            .into());
        }
        Ok(p)
    }

    /// The existing profile at `path`, or a new one when there is none.
    pub fn read_or_new(path: &Path) -> Result<Self> {
        if path.exists() {
            Self::read(path)
        } else {
            Ok(Self::new())
        }
    }

    /// Replaces section `name` and folds its parameters into the merged view.
    pub fn set_section(&mut self, name: &str, s: Section) {
        for (k, v) in &s.params {
            self.params.insert(k.clone(), *v);
            self.param_sources
                .insert(k.clone(), format!("{name} calibration, {}", s.when));
            match s.spread.get(k) {
                Some(sp) => self.param_spread.insert(k.clone(), *sp),
                None => self.param_spread.remove(k),
            };
        }
        self.sections.insert(name.to_string(), s);
        self.machine = Machine::this();
    }

    /// Checks, before anything is measured, that [`ProfileFile::write`] will succeed at `path`:
    /// an existing profile there reads, and its folder takes a new file (made and removed).
    pub fn check_writable(path: &Path) -> Result<()> {
        Self::read_or_new(path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display().to_string(), e))?;
        }
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, b"").map_err(|e| Error::io(path.display().to_string(), e))?;
        let _ = std::fs::remove_file(&tmp);
        Ok(())
    }

    /// Writes the profile atomically (temporary file, then rename).
    pub fn write(&self, path: &Path) -> Result<()> {
        let name = path.display().to_string();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display().to_string(), e))?;
        }
        let tmp = path.with_extension("json.tmp");
        let text =
            serde_json::to_string_pretty(self).map_err(|e| Error::Invariant(e.to_string()))? + "\n";
        let res = std::fs::write(&tmp, text).and_then(|_| std::fs::rename(&tmp, path));
        if let Err(e) = res {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::io(name, e));
        }
        Ok(())
    }
}

impl Default for ProfileFile {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: `calibrate -o` into an unwritable place failed only after the whole
    /// measurement.
    #[test]
    fn an_unwritable_output_is_found_before_measuring() {
        let dir = std::env::temp_dir().join(format!("kvr-profile-ro-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ok = dir.join("profile.json");
        ProfileFile::check_writable(&ok).unwrap();
        assert!(
            !ok.exists() && !dir.join("profile.json.tmp").exists(),
            "nothing left"
        );
        // A folder where a file should be, and a file where a folder should be.
        let e = ProfileFile::check_writable(&dir).unwrap_err().to_string();
        assert!(e.contains(&dir.display().to_string()), "{e}");
        std::fs::write(dir.join("file"), b"x").unwrap();
        assert!(ProfileFile::check_writable(&dir.join("file").join("p.json")).is_err());
        // An existing profile that does not read.
        std::fs::write(&ok, b"{").unwrap();
        assert!(ProfileFile::check_writable(&ok).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sections_merge_and_round_trip() {
        let dir = std::env::temp_dir().join(format!("kvr-prof-{}", std::process::id()));
        let path = dir.join("sub/p.json");
        let mut p = ProfileFile::read_or_new(&path).unwrap();
        let sec = |v: f64| Section {
            what: "test".into(),
            when: now_utc(),
            points: serde_json::json!([1, 2]),
            fit: Value::Null,
            params: BTreeMap::from([("remote_gbps".to_string(), v)]),
            spread: BTreeMap::from([("remote_gbps".to_string(), 0.05)]),
        };
        p.set_section("redis", sec(0.4));
        p.write(&path).unwrap();
        let mut q = ProfileFile::read(&path).unwrap();
        assert_eq!(q, p);
        q.set_section("redis", sec(0.5));
        assert_eq!(q.params["remote_gbps"], 0.5);
        assert_eq!(q.param_spread["remote_gbps"], 0.05);
        assert!(q.param_sources["remote_gbps"].starts_with("redis calibration, 20"));
        assert!(!dir.join("sub/p.json.tmp").exists());
        std::fs::write(&path, "{\"kvreplay_profile\": 7}").unwrap();
        assert!(
            ProfileFile::read(&path)
                .unwrap_err()
                .to_string()
                .contains("not a kvreplay profile")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn utc_timestamps_have_the_iso_form() {
        let t = now_utc();
        assert_eq!(t.len(), 20);
        assert!(t.starts_with("20") && t.ends_with('Z') && &t[10..11] == "T");
    }
}
