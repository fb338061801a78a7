//! The CUDA sources of the copy kernels and their compilation with NVRTC.
//!
//! Each `kernels/*.cu` file is one [`KernelModule`] with a fixed slot in [`ALL_MODULES`] (the
//! candle pattern), its source embedded with `include_str!`. A module is compiled at most once
//! per process for the device in use ([`compiled`], a `OnceLock` per slot) with pinned options
//! ([`OPTIONS`]); the options, the target and a hash of the source are kept with the image so that
//! a calibration can say exactly which code it measured.
//!
//! On a device the target is a CUBIN for its exact architecture (`sm_90` on an H100), which any
//! CUDA 12 driver loads whatever NVRTC produced it; a device NVRTC does not know gets PTX for the
//! newest architecture NVRTC knows below it, JIT-compiled by the driver. The compile check with no
//! device uses [`CHECK_ARCH`].

use super::GpuError;
use super::reference::{Direction, Layout, WORD_SIZES};
use cudarc::nvrtc::{result as nvrtc, sys as nvrtc_sys};
use std::ffi::{CString, c_char};
use std::sync::{Arc, OnceLock};

/// One `.cu` file: its name, source and the `extern "C"` kernels it defines.
#[derive(Debug)]
pub struct KernelModule {
    /// File stem (`kv_transfer` for `kernels/kv_transfer.cu`).
    pub name: &'static str,
    /// CUDA C++ source.
    pub source: &'static str,
    /// Kernels (unmangled names) the module defines.
    pub functions: &'static [&'static str],
    /// Index in [`ALL_MODULES`] (and in the compile-once cache).
    pub slot: usize,
}

/// The empty kernel (launch overhead).
pub const NOOP: &str = "kv_noop";

/// `kernels/kv_transfer.cu`: gather/scatter for both layouts and every word size.
pub const KV_TRANSFER: KernelModule = KernelModule {
    name: "kv_transfer",
    source: include_str!("../../kernels/kv_transfer.cu"),
    functions: &[
        "kv_gather_flash_w16",
        "kv_scatter_flash_w16",
        "kv_gather_flash_w8",
        "kv_scatter_flash_w8",
        "kv_gather_flash_w4",
        "kv_scatter_flash_w4",
        "kv_gather_flash_w1",
        "kv_scatter_flash_w1",
        "kv_gather_flashinfer_w16",
        "kv_scatter_flashinfer_w16",
        "kv_gather_flashinfer_w8",
        "kv_scatter_flashinfer_w8",
        "kv_gather_flashinfer_w4",
        "kv_scatter_flashinfer_w4",
        "kv_gather_flashinfer_w1",
        "kv_scatter_flashinfer_w1",
        NOOP,
    ],
    slot: 0,
};

/// Every module, each at its slot.
pub const ALL_MODULES: [&KernelModule; 1] = [&KV_TRANSFER];

/// The copy kernel for a direction, layout and word size (16, 8, 4 or 1 bytes).
pub fn copy_kernel(direction: Direction, layout: Layout, word: usize) -> Option<&'static str> {
    if !WORD_SIZES.contains(&word) {
        return None;
    }
    let name = format!("kv_{}_{}_w{word}", direction.name(), layout.name());
    KV_TRANSFER.functions.iter().copied().find(|f| *f == name)
}

/// NVRTC options every compilation uses (the target's `--gpu-architecture` is added).
pub const OPTIONS: &[&str] = &[
    "--std=c++17",
    "--fmad=false",
    "--ftz=false",
    "--prec-div=true",
    "--prec-sqrt=true",
];

/// Architecture of the compile check when no device says which (H100).
pub const CHECK_ARCH: u32 = 90;

/// What a module is compiled to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// PTX for a virtual architecture (`compute_90`), JIT-compiled by the driver at load.
    Ptx(u32),
    /// A CUBIN for a real architecture (`sm_90`).
    Cubin(u32),
}

impl Target {
    /// The `--gpu-architecture` value.
    pub fn arch(&self) -> String {
        match self {
            Target::Ptx(a) => format!("compute_{a}"),
            Target::Cubin(a) => format!("sm_{a}"),
        }
    }

    /// The full option list for this target.
    pub fn options(&self) -> Vec<String> {
        let mut o: Vec<String> = OPTIONS.iter().map(|s| s.to_string()).collect();
        o.push(format!("--gpu-architecture={}", self.arch()));
        o
    }

    /// The target for a device of compute capability `major.minor`, given the architectures
    /// NVRTC supports: a CUBIN when NVRTC knows the device, else PTX for the newest older one.
    pub fn for_device(major: i32, minor: i32, supported: &[i32]) -> Result<Target, GpuError> {
        let cc = major * 10 + minor;
        if supported.contains(&cc) {
            return Ok(Target::Cubin(cc as u32));
        }
        supported
            .iter()
            .filter(|a| **a <= cc)
            .max()
            .map(|a| Target::Ptx(*a as u32))
            .ok_or_else(|| {
                GpuError::Compile(format!(
                    "this NVRTC supports none of the architectures up to the device's sm_{cc} \
                     (it supports {supported:?})"
                ))
            })
    }
}

/// A compiled module.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The module's name.
    pub module: &'static str,
    /// What it was compiled to.
    pub target: Target,
    /// The NVRTC options used.
    pub options: Vec<String>,
    /// [`source_hash`] of the source compiled.
    pub source_hash: String,
    /// NVRTC's version, `major.minor`.
    pub nvrtc_version: String,
    /// NVRTC's log (warnings; usually empty).
    pub log: String,
    /// The PTX text or CUBIN bytes.
    pub image: Image,
}

/// Compiled code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Image {
    /// PTX text.
    Ptx(String),
    /// A CUBIN (ELF) image.
    Cubin(Vec<u8>),
}

impl Compiled {
    /// The image in the form cudarc's `CudaContext::load_module` takes.
    pub fn to_cudarc(&self) -> cudarc::nvrtc::Ptx {
        match &self.image {
            Image::Ptx(s) => cudarc::nvrtc::Ptx::from_src(s.clone()),
            Image::Cubin(b) => cudarc::nvrtc::Ptx::from_binary(b.clone()),
        }
    }
}

/// FNV-1a (64-bit) of `source`, as 16 hex digits: stable across Rust versions and machines.
pub fn source_hash(source: &str) -> String {
    let h = source.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{h:016x}")
}

/// Whether libnvrtc can be loaded (cudarc searches the usual names on `LD_LIBRARY_PATH`).
pub fn nvrtc_available() -> Result<(), GpuError> {
    // SAFETY: only tries to dlopen libnvrtc under its usual names.
    if unsafe { nvrtc_sys::is_culib_present() } {
        Ok(())
    } else {
        Err(GpuError::NoNvrtc)
    }
}

fn nvrtc_err(what: &str, e: nvrtc::NvrtcError) -> GpuError {
    GpuError::Compile(format!("{what}: {e}"))
}

/// NVRTC's version, `major.minor`.
pub fn nvrtc_version() -> Result<String, GpuError> {
    nvrtc_available()?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: libnvrtc is present; the two pointers are valid for writes.
    unsafe { nvrtc_sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|e| nvrtc_err("nvrtcVersion", e))?;
    Ok(format!("{major}.{minor}"))
}

/// The real architectures NVRTC can compile for (`[50, 52, ..., 90, ...]`).
pub fn supported_archs() -> Result<Vec<i32>, GpuError> {
    nvrtc_available()?;
    let mut n = 0;
    // SAFETY: libnvrtc is present; `n` is valid for a write.
    unsafe { nvrtc_sys::nvrtcGetNumSupportedArchs(&mut n) }
        .result()
        .map_err(|e| nvrtc_err("nvrtcGetNumSupportedArchs", e))?;
    let mut archs = vec![0i32; n.max(0) as usize];
    // SAFETY: `archs` has room for the `n` entries NVRTC writes.
    unsafe { nvrtc_sys::nvrtcGetSupportedArchs(archs.as_mut_ptr()) }
        .result()
        .map_err(|e| nvrtc_err("nvrtcGetSupportedArchs", e))?;
    Ok(archs)
}

/// An NVRTC program, destroyed on drop.
struct Program(nvrtc_sys::nvrtcProgram);

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: created by `create_program` and destroyed only here.
        let _ = unsafe { nvrtc::destroy_program(self.0) };
    }
}

fn c_text(chars: &[c_char]) -> String {
    let bytes: Vec<u8> = chars
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Compiles `module` for `target` (no caching): fails with NVRTC's log when the source does not
/// compile.
pub fn compile(module: &KernelModule, target: &Target) -> Result<Compiled, GpuError> {
    nvrtc_available()?;
    let nvrtc_version = nvrtc_version()?;
    let src = CString::new(module.source)
        .map_err(|_| GpuError::Compile(format!("{}: the source holds a NUL byte", module.name)))?;
    let name = CString::new(format!("{}.cu", module.name))
        .map_err(|_| GpuError::Compile(format!("{}: bad module name", module.name)))?;
    // `src` and `name` outlive `prog` (declared before it, so dropped after it).
    let prog = Program(
        nvrtc::create_program(&src, Some(&name))
            .map_err(|e| nvrtc_err(&format!("{}: nvrtcCreateProgram", module.name), e))?,
    );
    let options = target.options();
    // SAFETY: `prog` is a live program created above.
    let result = unsafe { nvrtc::compile_program(prog.0, &options) };
    // SAFETY: as above.
    let log = unsafe { nvrtc::get_program_log(prog.0) }
        .map(|l| c_text(&l))
        .unwrap_or_default();
    if let Err(e) = result {
        return Err(GpuError::Compile(format!(
            "{}.cu does not compile for {} ({e}) with {}:\n{}",
            module.name,
            target.arch(),
            options.join(" "),
            log.trim_end()
        )));
    }
    let image = match target {
        // SAFETY: `prog` compiled successfully.
        Target::Ptx(_) => Image::Ptx(c_text(
            &unsafe { nvrtc::get_ptx(prog.0) }.map_err(|e| nvrtc_err("nvrtcGetPTX", e))?,
        )),
        Target::Cubin(_) => {
            let mut size = 0usize;
            // SAFETY: `prog` compiled for a real architecture, so it has a CUBIN; `size` is
            // valid for a write.
            unsafe { nvrtc_sys::nvrtcGetCUBINSize(prog.0, &mut size) }
                .result()
                .map_err(|e| nvrtc_err("nvrtcGetCUBINSize", e))?;
            let mut bytes = vec![0u8; size];
            // SAFETY: `bytes` has the `size` bytes NVRTC writes.
            unsafe { nvrtc_sys::nvrtcGetCUBIN(prog.0, bytes.as_mut_ptr().cast()) }
                .result()
                .map_err(|e| nvrtc_err("nvrtcGetCUBIN", e))?;
            Image::Cubin(bytes)
        }
    };
    Ok(Compiled {
        module: module.name,
        target: target.clone(),
        options,
        source_hash: source_hash(module.source),
        nvrtc_version,
        log,
        image,
    })
}

/// `module` compiled for `target`, compiled on the first call and kept for the process (one
/// slot per module). A later call for another target compiles again without caching.
pub fn compiled(module: &'static KernelModule, target: &Target) -> Result<Arc<Compiled>, GpuError> {
    type Slot = OnceLock<(Target, Result<Arc<Compiled>, String>)>;
    static CACHE: [Slot; ALL_MODULES.len()] = [const { OnceLock::new() }; ALL_MODULES.len()];
    let slot = CACHE
        .get(module.slot)
        .ok_or_else(|| GpuError::Compile(format!("{}: no slot {}", module.name, module.slot)))?;
    let (t, r) = slot.get_or_init(|| {
        (
            target.clone(),
            compile(module, target)
                .map(Arc::new)
                .map_err(|e| e.to_string()),
        )
    });
    if t != target {
        return compile(module, target).map(Arc::new);
    }
    r.clone().map_err(GpuError::Compile)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel names `KVT_DEFINE(layout, n, word, W)` lines of the source generate.
    fn names_in_source(src: &str) -> Vec<String> {
        let mut v = Vec::new();
        for line in src.lines() {
            if let Some(args) = line
                .trim()
                .strip_prefix("KVT_DEFINE(")
                .and_then(|r| r.strip_suffix(')'))
            {
                let a: Vec<&str> = args.split(',').map(str::trim).collect();
                v.push(format!("kv_gather_{}_{}", a[0], a[2]));
                v.push(format!("kv_scatter_{}_{}", a[0], a[2]));
            }
        }
        for line in src.lines() {
            if let Some(rest) = line.strip_prefix("extern \"C\" __global__ void ") {
                v.push(rest.split('(').next().unwrap_or("").to_string());
            }
        }
        v
    }

    #[test]
    fn function_table_matches_the_source() {
        let mut from_src = names_in_source(KV_TRANSFER.source);
        let mut table: Vec<String> = KV_TRANSFER
            .functions
            .iter()
            .map(|s| s.to_string())
            .collect();
        from_src.sort();
        table.sort();
        assert_eq!(from_src, table);
        for (i, m) in ALL_MODULES.iter().enumerate() {
            assert_eq!(m.slot, i, "{}", m.name);
        }
    }

    #[test]
    fn every_direction_layout_and_word_has_a_kernel() {
        let mut seen = std::collections::HashSet::new();
        for d in [Direction::Gather, Direction::Scatter] {
            for l in Layout::ALL {
                for w in WORD_SIZES {
                    let k = copy_kernel(d, l, w).unwrap_or_else(|| panic!("{d:?} {l:?} {w}"));
                    assert!(seen.insert(k));
                }
            }
        }
        assert_eq!(seen.len() + 1, KV_TRANSFER.functions.len());
        assert_eq!(copy_kernel(Direction::Gather, Layout::Flash, 2), None);
    }

    #[test]
    fn source_hash_is_fnv1a() {
        assert_eq!(source_hash(""), "cbf29ce484222325");
        assert_eq!(source_hash("a"), "af63dc4c8601ec8c");
        assert_eq!(source_hash(KV_TRANSFER.source).len(), 16);
    }

    #[test]
    fn device_targets() {
        let archs = [75, 80, 86, 89, 90, 100, 120];
        assert_eq!(Target::for_device(9, 0, &archs).unwrap(), Target::Cubin(90));
        assert_eq!(Target::for_device(10, 3, &archs).unwrap(), Target::Ptx(100));
        assert!(Target::for_device(7, 0, &archs).is_err());
        let o = Target::Cubin(90).options();
        assert_eq!(o.last().unwrap(), "--gpu-architecture=sm_90");
        assert!(o.contains(&"--fmad=false".to_string()));
    }

    /// Compiles every module with NVRTC (no GPU needed) whenever libnvrtc loads, and fails if any
    /// kernel does not compile or is missing from the output.
    #[test]
    fn every_kernel_compiles_with_nvrtc() {
        if nvrtc_available().is_err() {
            println!(
                "skipped: libnvrtc not found (install nvidia-cuda-nvrtc-cu12 and set LD_LIBRARY_PATH)"
            );
            return;
        }
        let version = nvrtc_version().expect("NVRTC version");
        let archs = supported_archs().expect("NVRTC architectures");
        assert!(
            archs.contains(&(CHECK_ARCH as i32)),
            "NVRTC {version} cannot target sm_{CHECK_ARCH} (supports {archs:?})"
        );
        for m in ALL_MODULES {
            let ptx = compile(m, &Target::Ptx(CHECK_ARCH)).unwrap_or_else(|e| panic!("{e}"));
            let Image::Ptx(text) = &ptx.image else {
                panic!("PTX expected")
            };
            for f in m.functions {
                assert!(
                    text.contains(&format!(".entry {f}(")),
                    "{}: kernel {f} missing from the PTX",
                    m.name
                );
            }
            assert_eq!(
                text.matches(".entry ").count(),
                m.functions.len(),
                "{}: kernels in the PTX that the table does not list",
                m.name
            );
            let cubin = compile(m, &Target::Cubin(CHECK_ARCH)).unwrap_or_else(|e| panic!("{e}"));
            let Image::Cubin(bytes) = &cubin.image else {
                panic!("CUBIN expected")
            };
            assert_eq!(
                &bytes[..4],
                b"\x7fELF",
                "{}: CUBIN is not an ELF image",
                m.name
            );
            assert_eq!(cubin.source_hash, source_hash(m.source));
            println!(
                "compiled {}.cu ({} kernels) with NVRTC {version}: compute_{CHECK_ARCH} PTX {} bytes, \
                 sm_{CHECK_ARCH} CUBIN {} bytes, source {}",
                m.name,
                m.functions.len(),
                text.len(),
                bytes.len(),
                cubin.source_hash
            );
            // The compile-once cache hands back the same image.
            let a = compiled(m, &Target::Ptx(CHECK_ARCH)).unwrap_or_else(|e| panic!("{e}"));
            let b = compiled(m, &Target::Ptx(CHECK_ARCH)).unwrap_or_else(|e| panic!("{e}"));
            assert!(Arc::ptr_eq(&a, &b) || a.target != b.target);
        }
    }

    #[test]
    fn a_broken_kernel_fails_with_the_log() {
        if nvrtc_available().is_err() {
            println!(
                "skipped: libnvrtc not found (install nvidia-cuda-nvrtc-cu12 and set LD_LIBRARY_PATH)"
            );
            return;
        }
        static BROKEN: KernelModule = KernelModule {
            name: "broken",
            source: "extern \"C\" __global__ void k(int* p) { p[0] = undeclared; }",
            functions: &["k"],
            slot: 0,
        };
        let e = compile(&BROKEN, &Target::Ptx(CHECK_ARCH))
            .unwrap_err()
            .to_string();
        assert!(e.contains("undeclared") && e.contains("broken.cu"), "{e}");
    }
}
