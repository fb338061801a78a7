//! Local-disk calibration: what writing and reading one KV chunk file costs.
//!
//! Mirrors LMCache's local disk backend, which keeps one file per chunk: for a few file sizes
//! (1 MiB, 8 MiB and the chunk size) and queue depths (1 and 4 threads, each with its own files)
//! it writes files (buffered `write` + `fsync` per file, and `O_DIRECT` from 4096-aligned
//! buffers) and reads them back (buffered, after `fsync` + `POSIX_FADV_DONTNEED` so that the
//! reads reach the device, and `O_DIRECT`). A least-squares fit of the per-file time at queue
//! depth 1, `seconds = op + bytes / bandwidth`, gives `disk_write_gbps`, `disk_read_gbps` and
//! `disk_op_us` of [`crate::cost::TransferProfile`].
//!
//! Everything is written inside a folder `kvreplay-calibrate-<pid>` that the calibration creates
//! in the chosen directory and removes at the end, on error, on disk full and on panic (a drop
//! guard), so that the directory is left exactly as it was.
//!
//! Linux only (`O_DIRECT`, `posix_fadvise`, `statfs`).

use crate::calibrate::fit::{LinearFit, ols};
use crate::calibrate::profile::{Section, now_utc};
use crate::error::{Error, Result};
use serde_json::{Value, json};
use std::alloc::{Layout, alloc_zeroed, dealloc, handle_alloc_error};
use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

/// Default chunk file size: 256 tokens of Llama-3.1-8B in bf16 (128 KiB per token), 32 MiB.
pub const DEFAULT_CHUNK_BYTES: u64 = 32 << 20;

/// Largest chunk size accepted (buffers of this size are allocated per thread).
pub const MAX_CHUNK_BYTES: u64 = 256 << 20;

const MIB: u64 = 1 << 20;
/// `O_DIRECT` alignment of buffers, offsets and sizes.
const ALIGN: u64 = 4096;
/// Queue depths measured: threads writing or reading their own files at once.
const QUEUE_DEPTHS: [usize; 2] = [1, 4];

/// What to calibrate where.
#[derive(Debug, Clone, PartialEq)]
pub struct DiskOptions {
    /// Directory on the disk to measure (the LMCache `local_disk` path).
    pub dir: PathBuf,
    /// Chunk file size in bytes (default [`DEFAULT_CHUNK_BYTES`]); rounded up to 4096.
    pub chunk_bytes: u64,
    /// Fewer files and sizes: a run of about 15 s at most.
    pub quick: bool,
}

impl DiskOptions {
    /// Options for `dir` with the default chunk size, full run.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DiskOptions {
            dir: dir.into(),
            chunk_bytes: DEFAULT_CHUNK_BYTES,
            quick: false,
        }
    }
}

impl Default for DiskOptions {
    fn default() -> Self {
        Self::new(std::env::temp_dir())
    }
}

/// Measures the disk under `o.dir` and returns the `disk` section of a transfer profile.
///
/// Errors (each names the directory and what to do; nothing is left behind): the directory does
/// not exist, is not writable, has too little free space for the planned files, or fills up
/// during the run; an invalid chunk size; any other I/O error, with the file concerned.
pub fn calibrate_disk(o: &DiskOptions) -> Result<Section> {
    run(o, &|f: &mut File, b: &[u8]| f.write(b))
}

/// The function every calibration write goes through. Production passes `File::write`; the
/// tests pass one that fails with `ENOSPC` after some bytes, the only way to cause a disk-full
/// fault where no small file system can be mounted (mounting needs `CAP_SYS_ADMIN`).
type WriteFn<'a> = dyn Fn(&mut File, &[u8]) -> io::Result<usize> + Sync + 'a;

/// I/O mode of a measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Buffered,
    Direct,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Buffered => "buffered",
            Mode::Direct => "direct",
        }
    }
}

/// What will be measured.
#[derive(Debug, Clone, PartialEq)]
struct Plan {
    /// File sizes, ascending, multiples of [`ALIGN`].
    sizes: Vec<u64>,
    /// Files per point for each size (a multiple of every queue depth).
    files: Vec<usize>,
    /// Time after which a phase stops starting new files (each thread does at least 2).
    phase_cap: Duration,
    /// Chunk size after rounding.
    chunk_bytes: u64,
}

impl Plan {
    fn new(o: &DiskOptions) -> Result<Plan> {
        if o.chunk_bytes == 0 || o.chunk_bytes > MAX_CHUNK_BYTES {
            return Err(Error::Config(format!(
                "disk calibration: chunk size {} bytes must be between 1 byte and {} MiB",
                o.chunk_bytes,
                MAX_CHUNK_BYTES / MIB
            )));
        }
        let chunk = o.chunk_bytes.div_ceil(ALIGN) * ALIGN;
        let mut sizes: Vec<u64> = if o.quick {
            vec![MIB, chunk]
        } else {
            vec![256 << 10, MIB, 8 * MIB, chunk]
        };
        sizes.sort_unstable();
        sizes.dedup();
        if sizes.len() < 2 {
            // The fit needs two sizes at least.
            sizes.insert(0, (chunk / 4).div_ceil(ALIGN) * ALIGN);
            sizes.dedup();
        }
        let files = sizes
            .iter()
            .map(|&s| match (o.quick, s) {
                (true, s) if s <= MIB => 16,
                (true, _) => 8,
                (false, s) if s <= 256 << 10 => 64,
                (false, s) if s <= MIB => 32,
                (false, s) if s <= 8 * MIB => 16,
                (false, _) => 12,
            })
            .collect();
        Ok(Plan {
            sizes,
            files,
            phase_cap: Duration::from_millis(if o.quick { 700 } else { 4000 }),
            chunk_bytes: chunk,
        })
    }

    /// Bytes the calibration holds on disk at most (one point's files at a time, plus slack for
    /// metadata), rounded up to MiB.
    fn need_bytes(&self) -> u64 {
        let peak = self
            .sizes
            .iter()
            .zip(&self.files)
            .map(|(s, n)| s * *n as u64)
            .max()
            .unwrap_or(0);
        (peak + peak / 16 + 4 * MIB).div_ceil(MIB) * MIB
    }
}

/// A fault during the run.
#[derive(Debug)]
enum Fault {
    /// `ENOSPC` (or `EDQUOT`).
    Full,
    /// Another error on a file.
    Io(PathBuf, io::Error),
}

impl Fault {
    fn at(path: &Path, e: io::Error) -> Fault {
        match e.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => Fault::Full,
            _ => Fault::Io(path.to_path_buf(), e),
        }
    }
}

/// The folder the calibration writes into; removed on drop (errors ignored) or by
/// [`Workdir::finish`] (errors reported).
struct Workdir {
    path: PathBuf,
    /// Bytes held by the calibration's files right now.
    live: AtomicU64,
    removed: bool,
}

impl Workdir {
    fn finish(mut self) -> io::Result<()> {
        self.removed = true;
        std::fs::remove_dir_all(&self.path)
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        if !self.removed {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

static RUNS: AtomicU32 = AtomicU32::new(0);

/// Creates `kvreplay-calibrate-<pid>` in `dir` (with a `-<n>` suffix for further runs in the
/// same process).
fn make_workdir(dir: &Path) -> io::Result<Workdir> {
    loop {
        let n = RUNS.fetch_add(1, Ordering::Relaxed);
        let name = match n {
            0 => format!("kvreplay-calibrate-{}", std::process::id()),
            n => format!("kvreplay-calibrate-{}-{n}", std::process::id()),
        };
        let path = dir.join(name);
        match std::fs::create_dir(&path) {
            Ok(()) => {
                return Ok(Workdir {
                    path,
                    live: AtomicU64::new(0),
                    removed: false,
                });
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// A zero-initialised, 4096-aligned buffer filled with a pattern (so nothing compresses it).
struct AlignedBuf {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: the buffer is owned memory with no interior sharing.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    fn new(len: u64) -> AlignedBuf {
        let len = usize::try_from(len.max(ALIGN)).expect("buffer size fits in memory");
        let layout = Layout::from_size_align(len, ALIGN as usize).expect("valid layout");
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            handle_alloc_error(layout)
        };
        let mut b = AlignedBuf { ptr, layout };
        // A page of pattern, then copies of it (fast even in a debug build).
        let page: Vec<u8> = (0..ALIGN as usize)
            .map(|i| (i as u8).wrapping_mul(31) ^ 0x5A)
            .collect();
        for (k, p) in b.as_mut_slice().chunks_mut(ALIGN as usize).enumerate() {
            p.copy_from_slice(&page);
            p[0] = k as u8;
        }
        b
    }

    fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` points to `layout.size()` bytes we own, initialised in `new`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.layout.size()) }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice` (the memory is zero-initialised), and `&mut self` makes the
        // access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.layout.size()) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

fn c_path(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// Free bytes for an unprivileged user, or `None` where the file system does not report space
/// (procfs, ramfs).
fn free_bytes(dir: &Path) -> io::Result<Option<u64>> {
    let c = c_path(dir)?;
    // SAFETY: statvfs fills the zeroed struct; `c` is a valid C string.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if s.f_blocks == 0 {
        return Ok(None);
    }
    Ok(Some(s.f_bavail as u64 * s.f_frsize as u64))
}

/// The file-system type of `dir` from `statfs`, by magic number.
fn fs_type(dir: &Path) -> String {
    let Ok(c) = c_path(dir) else {
        return "unknown file system".into();
    };
    // SAFETY: statfs fills the zeroed struct; `c` is a valid C string.
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut s) } != 0 {
        return "unknown file system".into();
    }
    #[allow(clippy::unnecessary_cast)]
    let magic = s.f_type as u64 & 0xffff_ffff;
    match magic {
        0xEF53 => "ext4".into(),
        0x5846_5342 => "xfs".into(),
        0x9123_683E => "btrfs".into(),
        0x0102_1994 => "tmpfs".into(),
        0x794C_7630 => "overlay".into(),
        0x8584_58F6 => "ramfs".into(),
        0x9FA0 => "proc".into(),
        0x2FC1_2FC1 => "zfs".into(),
        0xF2F5_2010 => "f2fs".into(),
        0x6969 => "nfs".into(),
        0x6573_5546 => "fuse".into(),
        m => format!("file system 0x{m:x}"),
    }
}

/// The mount source (device) of `dir` from /proc/self/mountinfo, matched by device number.
fn device_of(dir: &Path) -> Option<String> {
    let dev = std::fs::metadata(dir).ok()?.dev();
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let want = format!("{major}:{minor}");
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let sep = f.iter().position(|x| *x == "-")?;
        (f.get(2) == Some(&want.as_str()))
            .then(|| f.get(sep + 2).map(|s| s.to_string()))
            .flatten()
    })
}

fn fadvise_dontneed(path: &Path) -> io::Result<()> {
    let f = File::open(path)?;
    // SAFETY: a valid open descriptor; offset 0, length 0 means the whole file.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

fn open_write(path: &Path, mode: Mode) -> io::Result<File> {
    let mut oo = OpenOptions::new();
    oo.write(true).create(true).truncate(true);
    if mode == Mode::Direct {
        oo.custom_flags(libc::O_DIRECT);
    }
    oo.open(path)
}

fn open_read(path: &Path, mode: Mode) -> io::Result<File> {
    let mut oo = OpenOptions::new();
    oo.read(true);
    if mode == Mode::Direct {
        oo.custom_flags(libc::O_DIRECT);
    }
    oo.open(path)
}

/// Writes all of `buf` through `w`, counting bytes into `live`.
fn write_all_with(w: &WriteFn, f: &mut File, mut buf: &[u8], live: &AtomicU64) -> io::Result<()> {
    while !buf.is_empty() {
        if crate::util::interrupt::interrupted() {
            return Err(io::Error::other("interrupted (Ctrl-C)"));
        }
        match w(f, buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                live.fetch_add(n as u64, Ordering::Relaxed);
                buf = &buf[n..];
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes one file: open, write, fsync, close. Returns seconds.
fn write_file(
    w: &WriteFn,
    path: &Path,
    buf: &[u8],
    mode: Mode,
    live: &AtomicU64,
) -> io::Result<f64> {
    let t = Instant::now();
    let mut f = open_write(path, mode)?;
    write_all_with(w, &mut f, buf, live)?;
    f.sync_all()?;
    drop(f);
    Ok(t.elapsed().as_secs_f64())
}

/// Reads one whole file: open, read, close. Returns seconds.
fn read_file(path: &Path, buf: &mut [u8], mode: Mode) -> io::Result<f64> {
    let t = Instant::now();
    let mut f = open_read(path, mode)?;
    let mut done = 0;
    while done < buf.len() {
        match f.read(&mut buf[done..]) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("file shorter than the {} bytes written", buf.len()),
                ));
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    drop(f);
    Ok(t.elapsed().as_secs_f64())
}

/// One measured phase: per-file seconds, per thread, and the wall time of the phase.
struct Phase {
    files: Vec<Vec<(PathBuf, f64)>>,
    wall_s: f64,
}

/// Runs `qd` threads; thread `t` handles its share of files with `f(t, i, buf)` until its share
/// is done, or the phase cap passes with 2 files done, or another thread failed.
fn phase<F>(
    qd: usize,
    shares: &[Vec<PathBuf>],
    size: u64,
    cap: Duration,
    f: F,
) -> std::result::Result<Phase, Fault>
where
    F: Fn(&Path, &mut AlignedBuf) -> std::result::Result<f64, Fault> + Sync,
{
    let abort = AtomicBool::new(false);
    let first_err: Mutex<Option<Fault>> = Mutex::new(None);
    let barrier = Barrier::new(qd);
    let starts: Mutex<Vec<Instant>> = Mutex::new(Vec::new());
    let results: Vec<(Vec<(PathBuf, f64)>, Instant)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..qd)
            .map(|t| {
                let (abort, first_err, barrier, starts, f) =
                    (&abort, &first_err, &barrier, &starts, &f);
                let share = &shares[t];
                s.spawn(move || {
                    let mut buf = AlignedBuf::new(size);
                    barrier.wait();
                    let start = Instant::now();
                    starts.lock().expect("no poisoning").push(start);
                    let mut done = Vec::new();
                    for p in share {
                        if abort.load(Ordering::Relaxed)
                            || (done.len() >= 2 && start.elapsed() > cap)
                        {
                            break;
                        }
                        match f(p, &mut buf) {
                            Ok(secs) => done.push((p.clone(), secs)),
                            Err(e) => {
                                abort.store(true, Ordering::Relaxed);
                                first_err.lock().expect("no poisoning").get_or_insert(e);
                                break;
                            }
                        }
                    }
                    (done, Instant::now())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    if let Some(e) = first_err.into_inner().expect("no poisoning") {
        return Err(e);
    }
    let start = starts.into_inner().expect("no poisoning").into_iter().min();
    let end = results.iter().map(|r| r.1).max();
    let wall_s = match (start, end) {
        (Some(s), Some(e)) => e.duration_since(s).as_secs_f64(),
        _ => 0.0,
    };
    Ok(Phase {
        files: results.into_iter().map(|r| r.0).collect(),
        wall_s,
    })
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn point(op: &str, mode: Mode, size: u64, qd: usize, secs: &[f64], wall_s: f64) -> Value {
    let mut s = secs.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let mb_s = if wall_s > 0.0 {
        (n as u64 * size) as f64 / wall_s / 1e6
    } else {
        0.0
    };
    let r3 = |v: f64| (v * 1000.0).round() / 1000.0;
    json!({
        "op": op,
        "mode": mode.name(),
        "bytes": size,
        "qd": qd,
        "n": n,
        "mb_s": r3(mb_s),
        "p50_ms": r3(percentile(&s, 50.0) * 1e3),
        "p99_ms": r3(percentile(&s, 99.0) * 1e3),
        "mean_ms": r3(s.iter().sum::<f64>() / n.max(1) as f64 * 1e3),
    })
}

/// Per-file observations (bytes, seconds) of the buffered queue-depth-1 points.
#[derive(Default)]
struct Obs {
    write: Vec<(u64, f64)>,
    read: Vec<(u64, f64)>,
}

/// State of a run that the error mapping needs.
struct Ctx<'a> {
    dir: &'a Path,
    work: &'a Workdir,
    need: u64,
}

impl Ctx<'_> {
    fn full(&self) -> Error {
        let written = self.work.live.load(Ordering::Relaxed);
        disk_full(self.dir, written, self.need)
    }

    fn map(&self, f: Fault) -> Error {
        match f {
            Fault::Full => self.full(),
            Fault::Io(p, e) => Error::io(p.display().to_string(), e),
        }
    }
}

fn dir_error(dir: &Path, kind: io::ErrorKind, msg: String) -> Error {
    Error::io(dir.display().to_string(), io::Error::new(kind, msg))
}

fn disk_full(dir: &Path, written: u64, need: u64) -> Error {
    dir_error(
        dir,
        io::ErrorKind::StorageFull,
        format!(
            "disk calibration: disk full in {} after {} MiB written; need about {} MiB free; \
             the calibration's files were removed: free some space or choose another directory",
            dir.display(),
            written.div_ceil(MIB),
            need.div_ceil(MIB)
        ),
    )
}

/// Refuses when the file system reports less free space than the plan needs.
fn check_space(dir: &Path, free: Option<u64>, need: u64) -> Result<()> {
    match free {
        Some(free) if free < need => Err(dir_error(
            dir,
            io::ErrorKind::StorageFull,
            format!(
                "disk calibration: not enough free space: {} MiB free, the calibration needs \
                 about {} MiB; free some space, use a smaller chunk size or choose another \
                 directory",
                free / MIB,
                need.div_ceil(MIB)
            ),
        )),
        _ => Ok(()),
    }
}

/// Checks that `dir` is an existing directory.
fn check_dir(dir: &Path) -> Result<()> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(dir_error(
            dir,
            io::ErrorKind::NotADirectory,
            "disk calibration: not a directory; pass a directory on the disk to measure".into(),
        )),
        Err(e) => Err(dir_error(
            dir,
            e.kind(),
            format!(
                "disk calibration: directory does not exist ({e}); create it or pass an \
                 existing directory"
            ),
        )),
    }
}

fn not_writable(dir: &Path, e: &io::Error) -> Error {
    dir_error(
        dir,
        io::ErrorKind::PermissionDenied,
        format!(
            "disk calibration: directory is not writable ({e}); choose a directory you can \
             write to"
        ),
    )
}

/// The calibration, with every write going through `w`.
fn run(o: &DiskOptions, w: &WriteFn) -> Result<Section> {
    let plan = Plan::new(o)?;
    let dir = o.dir.as_path();
    check_dir(dir)?;
    let need = plan.need_bytes();
    let free = free_bytes(dir).map_err(|e| {
        dir_error(
            dir,
            e.kind(),
            format!("disk calibration: cannot read free space ({e})"),
        )
    })?;

    // Writable at all? (Checked before free space: the more basic fault.)
    let work = match make_workdir(dir) {
        Ok(w) => w,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)) => {
            return Err(disk_full(dir, 0, need));
        }
        Err(e) => return Err(not_writable(dir, &e)),
    };
    check_space(dir, free, need)?;
    let ctx = Ctx {
        dir,
        work: &work,
        need,
    };

    // Probe: can we write a file here at all? It doubles as a warm-up.
    let probe = work.path.join("probe");
    let buf = AlignedBuf::new(MIB);
    let probed = write_file(w, &probe, buf.as_slice(), Mode::Buffered, &work.live);
    if let Err(e) = probed {
        return Err(match Fault::at(&probe, e) {
            Fault::Full => ctx.full(),
            Fault::Io(_, e) => not_writable(dir, &e),
        });
    }
    let mut rbuf = AlignedBuf::new(MIB);
    read_file(&probe, rbuf.as_mut_slice(), Mode::Buffered)
        .map_err(|e| ctx.map(Fault::at(&probe, e)))?;
    remove(&probe, MIB, &work).map_err(|e| ctx.map(e))?;

    // Does the file system take O_DIRECT?
    let direct_refused = match write_file(
        w,
        &probe,
        &buf.as_slice()[..ALIGN as usize],
        Mode::Direct,
        &work.live,
    ) {
        Ok(_) => {
            remove(&probe, ALIGN, &work).map_err(|e| ctx.map(e))?;
            None
        }
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            let _ = std::fs::remove_file(&probe);
            work.live.store(0, Ordering::Relaxed);
            Some(e)
        }
        Err(e) => return Err(ctx.map(Fault::at(&probe, e))),
    };
    drop((buf, rbuf));
    let modes: &[Mode] = if direct_refused.is_none() {
        &[Mode::Buffered, Mode::Direct]
    } else {
        &[Mode::Buffered]
    };

    let mut points = Vec::new();
    let mut obs = Obs::default();
    for (&size, &nfiles) in plan.sizes.iter().zip(&plan.files) {
        for qd in QUEUE_DEPTHS {
            for &mode in modes {
                crate::util::interrupt::check().map_err(Error::Config)?;
                measure(
                    &ctx,
                    w,
                    &plan,
                    size,
                    nfiles,
                    qd,
                    mode,
                    &mut points,
                    &mut obs,
                )
                .map_err(|e| ctx.map(e))?;
            }
        }
    }

    let (wfit, wfit_json) = fit_direction("write", &obs.write, &points);
    let (rfit, rfit_json) = fit_direction("read", &obs.read, &points);
    let op_raw_us = (wfit.op_s + rfit.op_s) / 2.0 * 1e6;
    let disk_op_us = op_raw_us.max(1.0);
    let params = BTreeMap::from([
        ("disk_write_gbps".to_string(), round_sig(wfit.gbps)),
        ("disk_read_gbps".to_string(), round_sig(rfit.gbps)),
        ("disk_op_us".to_string(), round_sig(disk_op_us)),
    ]);
    let fit = json!({
        "model": "seconds per file = op_s + bytes * s_per_byte (buffered, queue depth 1, one row per file)",
        "write": wfit_json,
        "read": rfit_json,
        "disk_op_us": {
            "from": "mean of the write and read intercepts",
            "raw_us": op_raw_us,
            "clamped_to_1us": op_raw_us < 1.0,
        },
    });

    let free_gib = free.map_or("free space unreported".to_string(), |f| {
        format!("{:.1} GiB free", f as f64 / (1u64 << 30) as f64)
    });
    let device = device_of(dir).unwrap_or_else(|| "unknown device".into());
    let sizes = plan
        .sizes
        .iter()
        .map(|s| mib_str(*s))
        .collect::<Vec<_>>()
        .join(", ");
    let mut what = format!(
        "local disk: {} ({} on {}, {}); one file per chunk like LMCache's local disk backend \
         (chunk {}); files of {} at queue depths 1 and 4 (threads with their own files); \
         buffered (write + fsync per file; reads after POSIX_FADV_DONTNEED) and O_DIRECT \
         (4096-aligned buffers)",
        dir.display(),
        fs_type(dir),
        device,
        free_gib,
        mib_str(plan.chunk_bytes),
        sizes,
    );
    if let Some(e) = &direct_refused {
        what.push_str(&format!(
            "; O_DIRECT refused by the file system ({e}): direct points skipped"
        ));
    }
    if o.quick {
        what.push_str("; quick run");
    }

    // Remove the folder now, reporting a failure (drop would ignore it).
    let path = work.path.clone();
    work.finish().map_err(|e| {
        dir_error(
            dir,
            e.kind(),
            format!(
                "disk calibration: could not remove its folder {} ({e}); remove it by hand",
                path.display()
            ),
        )
    })?;

    Ok(Section {
        what,
        when: now_utc(),
        points: Value::Array(points),
        fit,
        params,
        spread: Default::default(),
    })
}

fn mib_str(b: u64) -> String {
    if b.is_multiple_of(MIB) {
        format!("{} MiB", b / MIB)
    } else {
        format!("{} KiB", b.div_ceil(1024))
    }
}

/// Four significant digits.
fn round_sig(v: f64) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return v;
    }
    let mag = 10f64.powi(3 - v.abs().log10().floor() as i32);
    (v * mag).round() / mag
}

fn remove(path: &Path, size: u64, work: &Workdir) -> std::result::Result<(), Fault> {
    std::fs::remove_file(path).map_err(|e| Fault::Io(path.to_path_buf(), e))?;
    let _ = work
        .live
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
            Some(v.saturating_sub(size))
        });
    Ok(())
}

/// One (size, queue depth, mode): write the files, read them back, remove them.
#[allow(clippy::too_many_arguments)]
fn measure(
    ctx: &Ctx,
    w: &WriteFn,
    plan: &Plan,
    size: u64,
    nfiles: usize,
    qd: usize,
    mode: Mode,
    points: &mut Vec<Value>,
    obs: &mut Obs,
) -> std::result::Result<(), Fault> {
    let per = nfiles.div_ceil(qd);
    let shares: Vec<Vec<PathBuf>> = (0..qd)
        .map(|t| {
            (0..per)
                .map(|i| {
                    ctx.work
                        .path
                        .join(format!("{}-{size}-qd{qd}-t{t}-{i}", mode.name()))
                })
                .collect()
        })
        .collect();
    let live = &ctx.work.live;
    let wr = phase(qd, &shares, size, plan.phase_cap, |p, buf| {
        write_file(w, p, buf.as_slice(), mode, live).map_err(|e| Fault::at(p, e))
    });
    let wr = wr?;
    let wsecs: Vec<f64> = wr.files.iter().flatten().map(|f| f.1).collect();
    points.push(point("write", mode, size, qd, &wsecs, wr.wall_s));
    if mode == Mode::Buffered && qd == 1 {
        obs.write.extend(wsecs.iter().map(|s| (size, *s)));
    }

    // Read back what was written, each thread its own files, from the device.
    let written: Vec<Vec<PathBuf>> = wr
        .files
        .iter()
        .map(|v| v.iter().map(|f| f.0.clone()).collect())
        .collect();
    if mode == Mode::Buffered {
        for p in written.iter().flatten() {
            fadvise_dontneed(p).map_err(|e| Fault::at(p, e))?;
        }
    }
    let rd = phase(qd, &written, size, Duration::MAX, |p, buf| {
        read_file(p, buf.as_mut_slice(), mode).map_err(|e| Fault::at(p, e))
    })?;
    let rsecs: Vec<f64> = rd.files.iter().flatten().map(|f| f.1).collect();
    points.push(point("read", mode, size, qd, &rsecs, rd.wall_s));
    if mode == Mode::Buffered && qd == 1 {
        obs.read.extend(rsecs.iter().map(|s| (size, *s)));
    }
    for p in written.iter().flatten() {
        remove(p, size, ctx.work)?;
    }
    Ok(())
}

/// A direction's fitted cost.
struct DirFit {
    gbps: f64,
    op_s: f64,
}

/// Fits `seconds = op + bytes / bw` to one direction's observations; falls back to the
/// throughput of the largest buffered queue-depth-1 point where the fit fails or its slope is
/// not positive (noise swamping the size dependence).
fn fit_direction(op: &str, obs: &[(u64, f64)], points: &[Value]) -> (DirFit, Value) {
    let x: Vec<Vec<f64>> = obs.iter().map(|(b, _)| vec![1.0, *b as f64]).collect();
    let y: Vec<f64> = obs.iter().map(|(_, s)| *s).collect();
    let fit: Option<LinearFit> = ols(&["op_s", "s_per_byte"], &x, &y);
    if let Some(f) = &fit {
        let slope = f.coef[1];
        if slope > 0.0 && slope.is_finite() {
            let gbps = 1.0 / slope / 1e9;
            let (lo, hi) = (slope - f.ci95[1], slope + f.ci95[1]);
            let mut v = serde_json::to_value(f).unwrap_or(Value::Null);
            if let Value::Object(m) = &mut v {
                m.insert("gbps".into(), json!(gbps));
                m.insert(
                    "gbps_ci95".into(),
                    json!([
                        1.0 / hi / 1e9,
                        if lo > 0.0 {
                            1.0 / lo / 1e9
                        } else {
                            f64::INFINITY
                        }
                    ]),
                );
                m.insert("op_us".into(), json!(f.coef[0] * 1e6));
            }
            return (
                DirFit {
                    gbps,
                    op_s: f.coef[0],
                },
                v,
            );
        }
    }
    // Fallback: largest size, buffered, queue depth 1.
    let best = points
        .iter()
        .filter(|p| p["op"] == op && p["mode"] == "buffered" && p["qd"] == 1)
        .max_by_key(|p| p["bytes"].as_u64().unwrap_or(0));
    let gbps = best
        .and_then(|p| p["mb_s"].as_f64())
        .filter(|v| *v > 0.0)
        .map_or(1e-3, |v| v / 1e3);
    let v = json!({
        "fallback": "fit failed or its slope was not positive; bandwidth from the largest \
                     buffered queue-depth-1 point, op cost 0",
        "fit": fit,
        "gbps": gbps,
    });
    (DirFit { gbps, op_s: 0.0 }, v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let p =
                std::env::temp_dir().join(format!("kvr-disk-test-{}-{tag}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A file system mounted for a test (needs CAP_SYS_ADMIN), unmounted on drop.
    struct Mount(PathBuf);

    impl Mount {
        fn new(at: &Path, fstype: &str, flags: libc::c_ulong, opts: &str) -> Option<Mount> {
            std::fs::create_dir_all(at).unwrap();
            let (src, ty, data, target) = (
                CString::new(fstype).unwrap(),
                CString::new(fstype).unwrap(),
                CString::new(opts).unwrap(),
                c_path(at).unwrap(),
            );
            // SAFETY: valid C strings.
            let rc = unsafe {
                libc::mount(
                    src.as_ptr(),
                    target.as_ptr(),
                    ty.as_ptr(),
                    flags,
                    data.as_ptr().cast(),
                )
            };
            if rc != 0 {
                eprintln!(
                    "cannot mount {fstype} at {} ({}): test falls back",
                    at.display(),
                    io::Error::last_os_error()
                );
                let _ = std::fs::remove_dir(at);
                return None;
            }
            Some(Mount(at.to_path_buf()))
        }
    }

    impl Drop for Mount {
        fn drop(&mut self) {
            let c = c_path(&self.0).unwrap();
            // SAFETY: valid C string.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            let _ = std::fs::remove_dir(&self.0);
        }
    }

    /// Names, kinds, sizes and contents of everything under `dir`.
    fn snapshot(dir: &Path) -> BTreeMap<String, (bool, Vec<u8>)> {
        let mut out = BTreeMap::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let is_dir = e.file_type().unwrap().is_dir();
            let body = if is_dir {
                Vec::new()
            } else {
                std::fs::read(e.path()).unwrap()
            };
            out.insert(e.file_name().to_string_lossy().into_owned(), (is_dir, body));
        }
        out
    }

    fn quick(dir: &Path, chunk_bytes: u64) -> DiskOptions {
        DiskOptions {
            dir: dir.to_path_buf(),
            chunk_bytes,
            quick: true,
        }
    }

    /// A writer failing with ENOSPC once `limit` bytes have gone through it.
    fn enospc_after(limit: u64) -> impl Fn(&mut File, &[u8]) -> io::Result<usize> + Sync {
        let total = AtomicU64::new(0);
        move |f: &mut File, b: &[u8]| {
            if total.fetch_add(b.len() as u64, Ordering::SeqCst) + b.len() as u64 > limit {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            f.write(b)
        }
    }

    #[test]
    fn quick_calibration_measures_both_directions_and_leaves_the_dir_as_it_was() {
        let t = TempDir::new("quick");
        std::fs::write(t.0.join("keep.txt"), "user data").unwrap();
        std::fs::create_dir(t.0.join("sub")).unwrap();
        let before = snapshot(&t.0);
        let s = calibrate_disk(&quick(&t.0, 4 * MIB)).unwrap();
        assert_eq!(snapshot(&t.0), before);
        for k in ["disk_write_gbps", "disk_read_gbps", "disk_op_us"] {
            assert!(
                s.params[k] > 0.0 && s.params[k].is_finite(),
                "{k}: {:?}",
                s.params
            );
        }
        let pts = s.points.as_array().unwrap();
        let direct = !s.what.contains("O_DIRECT refused");
        let modes = if direct { 2 } else { 1 };
        // 2 sizes x 2 queue depths x modes x (write, read).
        assert_eq!(pts.len(), 2 * 2 * modes * 2, "{pts:?}");
        for op in ["write", "read"] {
            assert!(
                pts.iter()
                    .any(|p| p["op"] == op && p["mode"] == "buffered" && p["qd"] == 4)
            );
        }
        for p in pts {
            assert!(p["n"].as_u64().unwrap() >= 2, "{p}");
            assert!(p["mb_s"].as_f64().unwrap() > 0.0, "{p}");
            assert!(
                p["p99_ms"].as_f64().unwrap() >= p["p50_ms"].as_f64().unwrap(),
                "{p}"
            );
        }
        assert!(s.fit["write"]["gbps"].as_f64().unwrap() > 0.0);
        assert!(s.what.contains(&t.0.display().to_string()), "{}", s.what);
    }

    #[test]
    fn a_missing_directory_is_refused_clearly() {
        let t = TempDir::new("missing");
        let dir = t.0.join("no-such-dir");
        let e = calibrate_disk(&quick(&dir, MIB)).unwrap_err().to_string();
        assert!(
            e.contains(&dir.display().to_string()) && e.contains("does not exist"),
            "{e}"
        );
        assert!(e.contains("create it"), "{e}");
        assert!(snapshot(&t.0).is_empty());
        // A path under a regular file.
        std::fs::write(t.0.join("file"), "x").unwrap();
        let dir = t.0.join("file/sub");
        let e = calibrate_disk(&quick(&dir, MIB)).unwrap_err().to_string();
        assert!(
            e.contains("does not exist") && e.contains("Not a directory"),
            "{e}"
        );
        let e = calibrate_disk(&quick(&t.0.join("file"), MIB))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a directory"), "{e}");
        assert_eq!(snapshot(&t.0).len(), 1);
    }

    #[test]
    fn an_unwritable_directory_is_refused_clearly() {
        // Root ignores permission bits, so use places no one can write: /proc, and a read-only
        // tmpfs where mounting is allowed.
        let e = calibrate_disk(&quick(Path::new("/proc"), MIB))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("/proc: ") && e.contains("not writable"),
            "{e}"
        );
        assert!(e.contains("choose a directory you can write to"), "{e}");
        let t = TempDir::new("ro");
        if let Some(m) = Mount::new(&t.0.join("mnt"), "tmpfs", libc::MS_RDONLY, "size=4m") {
            let e = calibrate_disk(&quick(&m.0, MIB)).unwrap_err().to_string();
            assert!(e.contains("not writable") && e.contains("Read-only"), "{e}");
            assert!(snapshot(&m.0).is_empty());
        }
    }

    #[test]
    fn too_little_free_space_is_refused_up_front() {
        let dir = Path::new("/data/kv");
        let e = check_space(dir, Some(100 * MIB), 300 * MIB)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/data/kv") && e.contains("100 MiB free") && e.contains("300 MiB"),
            "{e}"
        );
        assert!(check_space(dir, None, 300 * MIB).is_ok());
        assert!(check_space(dir, Some(300 * MIB), 300 * MIB).is_ok());
        // For real: a 2 MiB tmpfs cannot hold 32 MiB chunk files.
        let t = TempDir::new("small");
        if let Some(m) = Mount::new(&t.0.join("mnt"), "tmpfs", 0, "size=2m") {
            let e = calibrate_disk(&quick(&m.0, DEFAULT_CHUNK_BYTES))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("not enough free space") && e.contains("2 MiB free"),
                "{e}"
            );
            assert!(snapshot(&m.0).is_empty());
        }
    }

    fn assert_disk_full(e: &Error, dir: &Path) {
        let s = e.to_string();
        let d = dir.display().to_string();
        assert!(s.contains(&format!("disk full in {d} after ")), "{s}");
        assert!(
            s.contains("MiB written; need about") && s.contains("files were removed"),
            "{s}"
        );
        let Error::Io { err: source, .. } = e else {
            panic!("{e:?}")
        };
        assert_eq!(source.kind(), io::ErrorKind::StorageFull);
    }

    #[test]
    fn disk_full_during_the_run_stops_and_removes_everything() {
        // For real where a tmpfs can be mounted: room for bytes but only a few inodes, so file
        // creation fails with ENOSPC after four 1 MiB files (root, our folder, 4 files).
        let t = TempDir::new("full");
        if let Some(m) = Mount::new(&t.0.join("mnt"), "tmpfs", 0, "size=64m,nr_inodes=6") {
            let e = calibrate_disk(&quick(&m.0, 4 * MIB)).unwrap_err();
            assert_disk_full(&e, &m.0);
            assert!(e.to_string().contains("after 4 MiB written"), "{e}");
            assert!(snapshot(&m.0).is_empty(), "{:?}", snapshot(&m.0).keys());
        } else {
            eprintln!("disk-full test uses the ENOSPC write seam (no tmpfs mount here)");
            disk_full_via_the_write_seam_stops_and_removes_everything();
        }
    }

    #[test]
    fn disk_full_via_the_write_seam_stops_and_removes_everything() {
        // The seam stands in for ENOSPC where no small file system can be mounted.
        let t = TempDir::new("seam");
        std::fs::write(t.0.join("keep.txt"), "user data").unwrap();
        let before = snapshot(&t.0);
        let w = enospc_after(3 * MIB + 100);
        let e = run(&quick(&t.0, 4 * MIB), &w).unwrap_err();
        assert_disk_full(&e, &t.0);
        assert_eq!(snapshot(&t.0), before);
        // Full while probing: nothing written yet.
        let w = enospc_after(0);
        let e = run(&quick(&t.0, 4 * MIB), &w).unwrap_err();
        assert_disk_full(&e, &t.0);
        assert!(e.to_string().contains("after 0 MiB written"), "{e}");
        assert_eq!(snapshot(&t.0), before);
    }

    #[test]
    fn o_direct_refusal_is_recorded_and_buffered_points_kept() {
        // ramfs refuses O_DIRECT (EINVAL) and reports no free-space figures.
        let t = TempDir::new("ramfs");
        let Some(m) = Mount::new(&t.0.join("mnt"), "ramfs", 0, "") else {
            return;
        };
        let s = calibrate_disk(&quick(&m.0, 2 * MIB)).unwrap();
        assert!(
            s.what.contains("O_DIRECT refused") && s.what.contains("ramfs"),
            "{}",
            s.what
        );
        let pts = s.points.as_array().unwrap();
        assert!(
            pts.iter().all(|p| p["mode"] == "buffered") && pts.len() == 8,
            "{pts:?}"
        );
        assert!(s.params["disk_read_gbps"] > 0.0);
        assert!(snapshot(&m.0).is_empty());
    }

    #[test]
    fn plans_and_chunk_sizes() {
        let p = Plan::new(&quick(Path::new("."), DEFAULT_CHUNK_BYTES)).unwrap();
        assert_eq!(p.sizes, vec![MIB, 32 * MIB]);
        assert_eq!(p.need_bytes(), (256 + 16 + 4) * MIB);
        let full = Plan::new(&DiskOptions::new(".")).unwrap();
        assert_eq!(full.sizes, vec![256 << 10, MIB, 8 * MIB, 32 * MIB]);
        // One size only: a quarter-size file is added for the fit; odd sizes round up to 4096.
        let p = Plan::new(&quick(Path::new("."), MIB)).unwrap();
        assert_eq!(p.sizes, vec![256 << 10, MIB]);
        assert_eq!(
            Plan::new(&quick(Path::new("."), 5000)).unwrap().chunk_bytes,
            8192
        );
        for bad in [0, MAX_CHUNK_BYTES + 1] {
            let e = Plan::new(&quick(Path::new("."), bad))
                .unwrap_err()
                .to_string();
            assert!(e.contains("chunk size"), "{e}");
        }
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 50.0), 2.0);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 99.0), 4.0);
    }
}
