//! A GPU context, the buffers the copy kernels work on, and typed launches of every kernel.
//!
//! [`Gpu`] holds device 0, one stream and the loaded `kv_transfer` module. Every buffer it makes
//! ([`PagedCache`], [`ChunkBuf`]) and every launch and copy it issues goes on that one stream, so
//! stream order alone keeps them consistent: a device buffer is freed in stream order, a pinned
//! buffer waits for the stream before it is freed or read on the host.
//!
//! A transfer is first checked against [`super::reference::check_transfer`] and turned into a
//! [`TransferPlan`] (slot mapping, chunk addresses and chunk starts uploaded once), which can then
//! be launched any number of times: what LMCache does per chunk, and what a timing loop needs.

use super::kernels::{self, Compiled, KV_TRANSFER, NOOP, Target};
use super::reference::{self, Direction, PagedShape};
use super::{DriverContext, GpuError, gpu_available};
use cudarc::driver::{
    CudaContext, CudaEvent, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr,
    LaunchConfig, PushKernelArg, result, sys,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// Device 0 with the copy kernels loaded.
#[derive(Debug)]
pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    _module: Arc<CudaModule>,
    functions: HashMap<&'static str, CudaFunction>,
    compiled: Arc<Compiled>,
    name: String,
    cc: (i32, i32),
}

/// Where a buffer lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemKind {
    /// GPU memory.
    Device,
    /// Page-locked host memory, mapped into the device's address space (zero copy).
    Pinned,
    /// Ordinary (pageable) host memory: memcpy only, kernels cannot reach it.
    Pageable,
}

/// Page-locked host memory allocated with `cuMemHostAlloc(DEVICEMAP)`; its device address is
/// what the kernels read or write. Freed after the stream's work is done.
#[derive(Debug)]
pub struct PinnedBuf {
    ptr: *mut u8,
    len: usize,
    dev: u64,
    stream: Arc<CudaStream>,
}

impl PinnedBuf {
    fn new(gpu: &Gpu, len: usize) -> Result<PinnedBuf, GpuError> {
        if len == 0 {
            return Err(GpuError::invalid("a pinned buffer needs one byte at least"));
        }
        gpu.ctx.bind_to_thread().during("binding the context")?;
        // SAFETY: the context is current; the memory is uninitialised until filled below.
        let ptr = unsafe { result::malloc_host(len, sys::CU_MEMHOSTALLOC_DEVICEMAP) }
            .during("cuMemHostAlloc")? as *mut u8;
        let mut buf = PinnedBuf {
            ptr,
            len,
            dev: 0,
            stream: gpu.stream.clone(),
        };
        let mut dev: sys::CUdeviceptr = 0;
        // SAFETY: `ptr` was just allocated with DEVICEMAP in the current context.
        unsafe { sys::cuMemHostGetDevicePointer_v2(&mut dev, ptr.cast(), 0) }
            .result()
            .during("cuMemHostGetDevicePointer")?;
        buf.dev = dev;
        Ok(buf)
    }

    /// The bytes, after the stream's work is done.
    pub fn as_slice(&self) -> Result<&[u8], GpuError> {
        self.stream.synchronize().during("synchronising")?;
        // SAFETY: `ptr` holds `len` bytes for as long as `self`; nothing on the stream is
        // pending, and no new work can be issued on this buffer while `&self` is held by a
        // reader only (plans that write it hold `&mut`).
        Ok(unsafe { std::slice::from_raw_parts(self.ptr, self.len) })
    }

    /// The bytes for writing, after the stream's work is done.
    pub fn as_mut_slice(&mut self) -> Result<&mut [u8], GpuError> {
        self.stream.synchronize().during("synchronising")?;
        // SAFETY: as in `as_slice`, and `&mut self` excludes every other user.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) })
    }
}

impl Drop for PinnedBuf {
    fn drop(&mut self) {
        // Kernels or copies may still use the memory: wait for them first.
        let _ = self.stream.synchronize();
        let _ = self.stream.context().bind_to_thread();
        // SAFETY: allocated by `cuMemHostAlloc` and freed only here, after the stream is idle.
        let _ = unsafe { result::free_host(self.ptr.cast()) };
    }
}

/// A chunk buffer (or any byte buffer a copy uses): GPU, pinned host or pageable host memory.
#[derive(Debug)]
pub enum ChunkBuf {
    /// GPU memory.
    Device(CudaSlice<u8>),
    /// Pinned host memory (device-addressable).
    Pinned(PinnedBuf),
    /// Pageable host memory.
    Pageable(Vec<u8>),
}

impl ChunkBuf {
    /// Bytes.
    pub fn len(&self) -> usize {
        match self {
            ChunkBuf::Device(s) => s.len(),
            ChunkBuf::Pinned(p) => p.len,
            ChunkBuf::Pageable(v) => v.len(),
        }
    }

    /// Whether it holds no byte.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where it lives.
    pub fn kind(&self) -> MemKind {
        match self {
            ChunkBuf::Device(_) => MemKind::Device,
            ChunkBuf::Pinned(_) => MemKind::Pinned,
            ChunkBuf::Pageable(_) => MemKind::Pageable,
        }
    }

    /// The address a kernel uses (none for pageable memory).
    fn device_addr(&self, stream: &CudaStream) -> Option<u64> {
        match self {
            ChunkBuf::Device(s) => Some(s.device_ptr(stream).0),
            ChunkBuf::Pinned(p) => Some(p.dev),
            ChunkBuf::Pageable(_) => None,
        }
    }

    /// The source end of a memcpy.
    fn src_end(&self, stream: &CudaStream) -> End {
        match self {
            ChunkBuf::Device(s) => End::Device(s.device_ptr(stream).0),
            ChunkBuf::Pinned(p) => End::Host(p.ptr),
            // Only ever read through (`memcpy_raw` reads a source end).
            ChunkBuf::Pageable(v) => End::Host(v.as_ptr().cast_mut()),
        }
    }

    /// The destination end of a memcpy.
    fn dst_end(&mut self, stream: &CudaStream) -> End {
        match self {
            ChunkBuf::Device(s) => End::Device(s.device_ptr(stream).0),
            ChunkBuf::Pinned(p) => End::Host(p.ptr),
            ChunkBuf::Pageable(v) => End::Host(v.as_mut_ptr()),
        }
    }

    /// A copy of the bytes on the host, after the stream's work is done.
    pub fn to_vec(&self, gpu: &Gpu) -> Result<Vec<u8>, GpuError> {
        match self {
            ChunkBuf::Device(s) => gpu.stream.clone_dtoh(s).during("copying to the host"),
            ChunkBuf::Pinned(p) => Ok(p.as_slice()?.to_vec()),
            ChunkBuf::Pageable(v) => {
                gpu.synchronize()?;
                Ok(v.clone())
            }
        }
    }
}

/// A paged KV cache on the GPU: one buffer per layer (as vLLM allocates it) and a device array
/// of their addresses (what the kernels take).
#[derive(Debug)]
pub struct PagedCache {
    shape: PagedShape,
    layers: Vec<CudaSlice<u8>>,
    layer_ptrs: CudaSlice<u64>,
}

impl PagedCache {
    /// Its shape.
    pub fn shape(&self) -> &PagedShape {
        &self.shape
    }

    /// Every layer's bytes on the host, after the stream's work is done.
    pub fn to_host(&self, gpu: &Gpu) -> Result<Vec<Vec<u8>>, GpuError> {
        self.layers
            .iter()
            .map(|l| {
                gpu.stream
                    .clone_dtoh(l)
                    .during("copying the cache to the host")
            })
            .collect()
    }

    /// The (byte offset, bytes) regions of block `b` in each layer that vLLM's offloader copies
    /// one memcpy each: K and V apart for FlashAttention, together for FlashInfer.
    pub fn block_regions(&self, b: usize) -> Vec<(usize, usize)> {
        let s = &self.shape;
        let block = s.block_size * s.row_bytes();
        match s.layout {
            reference::Layout::Flash => vec![
                (s.row_offset(0, b * s.block_size), block),
                (s.row_offset(1, b * s.block_size), block),
            ],
            reference::Layout::FlashInfer => vec![(s.row_offset(0, b * s.block_size), 2 * block)],
        }
    }
}

/// One end of a raw memcpy.
#[derive(Debug, Clone, Copy)]
enum End {
    Device(u64),
    Host(*mut u8),
}

/// What a plan keeps borrowed while it exists.
#[derive(Debug)]
#[allow(dead_code)] // held for the borrow only
enum Holds<'a> {
    Written(Vec<&'a mut ChunkBuf>),
    Read(Vec<&'a ChunkBuf>),
}

/// A checked transfer with its tables on the GPU, ready to launch (any number of times).
///
/// It borrows the cache and the chunk buffers for as long as it exists: exclusively the chunks a
/// gather writes (they may be host memory), shared the rest.
#[derive(Debug)]
pub struct TransferPlan<'a> {
    direction: Direction,
    shape: PagedShape,
    word: usize,
    kernel: &'static str,
    layer_ptrs: &'a CudaSlice<u64>,
    chunk_ptrs: CudaSlice<u64>,
    chunk_starts: CudaSlice<i64>,
    slots: CudaSlice<i64>,
    num_chunks: i32,
    tokens: usize,
    skip: usize,
    addrs: Vec<u64>,
    bytes: u64,
    _holds: Holds<'a>,
}

impl TransferPlan<'_> {
    /// The kernel it launches.
    pub fn kernel(&self) -> &'static str {
        self.kernel
    }

    /// The word size the kernel copies with.
    pub fn word(&self) -> usize {
        self.word
    }

    /// Bytes one launch copies (rows of copied tokens).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Uses words of `word` bytes instead of the widest possible (16, 8, 4 or 1 that divides the
    /// row and every address).
    pub fn set_word(&mut self, word: usize) -> Result<(), GpuError> {
        let fits = self.shape.row_bytes().is_multiple_of(word)
            && self.addrs.iter().all(|a| a % word as u64 == 0);
        let kernel = kernels::copy_kernel(self.direction, self.shape.layout, word)
            .filter(|_| fits)
            .ok_or_else(|| {
                GpuError::invalid(format!(
                    "word of {word} bytes does not fit rows of {} bytes at these addresses",
                    self.shape.row_bytes()
                ))
            })?;
        self.word = word;
        self.kernel = kernel;
        Ok(())
    }
}

impl Gpu {
    /// Device 0 with the kernels compiled (once per process) and loaded. Fails cleanly, never
    /// panics, without a driver, a device or libnvrtc.
    pub fn new() -> Result<Gpu, GpuError> {
        gpu_available().map_err(GpuError::Unavailable)?;
        kernels::nvrtc_available()?;
        let ctx = CudaContext::new(0).during("creating a context on device 0")?;
        let cc = ctx
            .compute_capability()
            .during("reading the compute capability")?;
        let name = ctx.name().during("reading the device name")?;
        let target = Target::for_device(cc.0, cc.1, &kernels::supported_archs()?)?;
        let compiled = kernels::compiled(&KV_TRANSFER, &target)?;
        let module = ctx.load_module(compiled.to_cudarc()).during(&format!(
            "loading {}.cu compiled for {} by NVRTC {}",
            compiled.module,
            target.arch(),
            compiled.nvrtc_version
        ))?;
        let mut functions = HashMap::new();
        for f in KV_TRANSFER.functions {
            functions.insert(
                *f,
                module
                    .load_function(f)
                    .during(&format!("loading kernel {f}"))?,
            );
        }
        let stream = ctx.new_stream().during("creating a stream")?;
        Ok(Gpu {
            ctx,
            stream,
            _module: module,
            functions,
            compiled,
            name,
            cc,
        })
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Compute capability (major, minor).
    pub fn compute_capability(&self) -> (i32, i32) {
        self.cc
    }

    /// The compiled module in use (target, options, source hash, NVRTC version).
    pub fn compiled(&self) -> &Compiled {
        &self.compiled
    }

    /// Waits for everything issued so far.
    pub fn synchronize(&self) -> Result<(), GpuError> {
        self.stream.synchronize().during("synchronising the stream")
    }

    fn function(&self, name: &str) -> Result<&CudaFunction, GpuError> {
        self.functions
            .get(name)
            .ok_or_else(|| GpuError::invalid(format!("no kernel {name}")))
    }

    /// A buffer of `bytes` bytes of `kind`, every byte `fill`.
    pub fn alloc_chunk(&self, kind: MemKind, bytes: usize, fill: u8) -> Result<ChunkBuf, GpuError> {
        if bytes == 0 {
            return Err(GpuError::invalid("a buffer needs one byte at least"));
        }
        Ok(match kind {
            MemKind::Device => {
                // SAFETY: every byte is set by the memset below before any use.
                let s = unsafe { self.stream.alloc::<u8>(bytes) }.during("cuMemAlloc")?;
                let (p, record) = s.device_ptr(&self.stream);
                // SAFETY: `p` addresses the `bytes` bytes just allocated on this stream.
                unsafe { result::memset_d8_async(p, fill, bytes, self.stream.cu_stream()) }
                    .during("cuMemsetD8")?;
                drop(record);
                ChunkBuf::Device(s)
            }
            MemKind::Pinned => {
                let mut p = PinnedBuf::new(self, bytes)?;
                p.as_mut_slice()?.fill(fill);
                ChunkBuf::Pinned(p)
            }
            MemKind::Pageable => ChunkBuf::Pageable(vec![fill; bytes]),
        })
    }

    /// A buffer of `kind` holding `data`.
    pub fn chunk_from(&self, kind: MemKind, data: &[u8]) -> Result<ChunkBuf, GpuError> {
        if data.is_empty() {
            return Err(GpuError::invalid("a buffer needs one byte at least"));
        }
        Ok(match kind {
            MemKind::Device => {
                ChunkBuf::Device(self.stream.clone_htod(data).during("cuMemcpyHtoD")?)
            }
            MemKind::Pinned => {
                let mut p = PinnedBuf::new(self, data.len())?;
                p.as_mut_slice()?.copy_from_slice(data);
                ChunkBuf::Pinned(p)
            }
            MemKind::Pageable => ChunkBuf::Pageable(data.to_vec()),
        })
    }

    fn cache_with(
        &self,
        shape: PagedShape,
        layers: Vec<CudaSlice<u8>>,
    ) -> Result<PagedCache, GpuError> {
        let ptrs: Vec<u64> = layers
            .iter()
            .map(|l| l.device_ptr(&self.stream).0)
            .collect();
        let layer_ptrs = self
            .stream
            .clone_htod(&ptrs)
            .during("uploading layer addresses")?;
        Ok(PagedCache {
            shape,
            layers,
            layer_ptrs,
        })
    }

    /// A paged cache of `shape` on the GPU, every byte `fill`.
    pub fn alloc_cache(&self, shape: PagedShape, fill: u8) -> Result<PagedCache, GpuError> {
        shape.validate()?;
        let layers = (0..shape.layers)
            .map(
                |_| match self.alloc_chunk(MemKind::Device, shape.layer_bytes(), fill)? {
                    ChunkBuf::Device(s) => Ok(s),
                    _ => Err(GpuError::invalid("device allocation expected")),
                },
            )
            .collect::<Result<Vec<_>, GpuError>>()?;
        self.cache_with(shape, layers)
    }

    /// A paged cache of `shape` on the GPU holding `layers` (one byte slice per layer).
    pub fn cache_from(&self, shape: PagedShape, layers: &[&[u8]]) -> Result<PagedCache, GpuError> {
        shape.validate()?;
        if layers.len() != shape.layers || layers.iter().any(|l| l.len() != shape.layer_bytes()) {
            return Err(GpuError::invalid(format!(
                "{} layers of {} bytes expected",
                shape.layers,
                shape.layer_bytes()
            )));
        }
        let slices = layers
            .iter()
            .map(|l| self.stream.clone_htod(*l).during("uploading a layer"))
            .collect::<Result<Vec<_>, GpuError>>()?;
        self.cache_with(shape, slices)
    }

    #[allow(clippy::too_many_arguments)]
    fn plan<'a>(
        &self,
        direction: Direction,
        cache: &'a PagedCache,
        slots: &[i64],
        chunk_tokens: &[usize],
        chunk_addrs: Vec<Option<u64>>,
        chunk_lens: &[usize],
        skip: usize,
        holds: Holds<'a>,
    ) -> Result<TransferPlan<'a>, GpuError> {
        let shape = cache.shape;
        let starts =
            reference::check_transfer(&shape, direction, slots, chunk_tokens, chunk_lens, skip)?;
        let chunk_addrs = chunk_addrs
            .into_iter()
            .collect::<Option<Vec<u64>>>()
            .ok_or_else(|| {
                GpuError::invalid("kernels cannot reach pageable host memory; use pinned")
            })?;
        if shape.layers > 65_535 || slots.len() - skip > i32::MAX as usize {
            return Err(GpuError::invalid(
                "more layers or tokens than one launch's grid holds",
            ));
        }
        let mut addrs: Vec<u64> = cache
            .layers
            .iter()
            .map(|l| l.device_ptr(&self.stream).0)
            .collect();
        addrs.extend(&chunk_addrs);
        let word = reference::word_bytes(shape.row_bytes(), &addrs);
        let kernel = kernels::copy_kernel(direction, shape.layout, word)
            .ok_or_else(|| GpuError::invalid(format!("no kernel for words of {word} bytes")))?;
        let copied = slots[skip..].iter().filter(|s| **s >= 0).count() as u64;
        let starts: Vec<i64> = starts.iter().map(|s| *s as i64).collect();
        // An empty slot mapping still needs a (never read) device allocation.
        let slot_table: Vec<i64> = if slots.is_empty() {
            vec![-1]
        } else {
            slots.to_vec()
        };
        Ok(TransferPlan {
            direction,
            shape,
            word,
            kernel,
            layer_ptrs: &cache.layer_ptrs,
            chunk_ptrs: self
                .stream
                .clone_htod(&chunk_addrs)
                .during("uploading chunk addresses")?,
            chunk_starts: self
                .stream
                .clone_htod(&starts)
                .during("uploading chunk starts")?,
            slots: self
                .stream
                .clone_htod(&slot_table)
                .during("uploading the slot mapping")?,
            num_chunks: chunk_tokens.len() as i32,
            tokens: slots.len(),
            skip,
            addrs,
            bytes: copied * 2 * shape.layers as u64 * shape.row_bytes() as u64,
            _holds: holds,
        })
    }

    /// Plans a gather: `cache` rows of `slots` -> `chunks` (GPU or pinned), chunk `c` taking the
    /// next `chunk_tokens[c]` tokens; the first `skip` tokens and negative slots are not copied.
    pub fn gather_plan<'a>(
        &self,
        cache: &'a PagedCache,
        slots: &[i64],
        chunk_tokens: &[usize],
        chunks: Vec<&'a mut ChunkBuf>,
        skip: usize,
    ) -> Result<TransferPlan<'a>, GpuError> {
        let addrs = chunks.iter().map(|c| c.device_addr(&self.stream)).collect();
        let lens: Vec<usize> = chunks.iter().map(|c| c.len()).collect();
        let holds = Holds::Written(chunks);
        self.plan(
            Direction::Gather,
            cache,
            slots,
            chunk_tokens,
            addrs,
            &lens,
            skip,
            holds,
        )
    }

    /// Plans a scatter: `chunks` (GPU or pinned) -> `cache` rows of `slots`; the first `skip`
    /// tokens (already in the cache) and negative slots are not copied.
    ///
    /// The cache is borrowed shared: it is GPU memory, which the host only reads through the
    /// same stream ([`PagedCache::to_host`]), after the writes issued before.
    pub fn scatter_plan<'a>(
        &self,
        cache: &'a PagedCache,
        slots: &[i64],
        chunk_tokens: &[usize],
        chunks: Vec<&'a ChunkBuf>,
        skip: usize,
    ) -> Result<TransferPlan<'a>, GpuError> {
        let addrs = chunks.iter().map(|c| c.device_addr(&self.stream)).collect();
        let lens: Vec<usize> = chunks.iter().map(|c| c.len()).collect();
        self.plan(
            Direction::Scatter,
            cache,
            slots,
            chunk_tokens,
            addrs,
            &lens,
            skip,
            Holds::Read(chunks),
        )
    }

    /// Launches `plan` on the stream (asynchronous).
    pub fn launch(&self, plan: &TransferPlan<'_>) -> Result<(), GpuError> {
        let grid_x = plan.tokens - plan.skip;
        if grid_x == 0 {
            return Ok(());
        }
        let f = self.function(plan.kernel)?;
        let row_words = (plan.shape.row_bytes() / plan.word) as i64;
        let threads = (row_words.min(256) as u32).next_multiple_of(32).max(32);
        let cfg = LaunchConfig {
            grid_dim: (grid_x as u32, plan.shape.layers as u32, 2),
            block_dim: (threads, 1, 1),
            shared_mem_bytes: 0,
        };
        let (num_blocks, block_size, skip) = (
            plan.shape.num_blocks as i64,
            plan.shape.block_size as i64,
            plan.skip as i64,
        );
        let mut b = self.stream.launch_builder(f);
        b.arg(plan.layer_ptrs)
            .arg(&plan.chunk_ptrs)
            .arg(&plan.chunk_starts)
            .arg(&plan.num_chunks)
            .arg(&plan.slots)
            .arg(&skip)
            .arg(&num_blocks)
            .arg(&block_size)
            .arg(&row_words);
        // SAFETY: the arguments match the kernel's signature (KVT_ARGS in kv_transfer.cu) in
        // order and type. `check_transfer` proved every row touched lies inside its layer or chunk
        // buffer: slots < num_blocks * block_size, chunk buffers hold their tokens' rows, starts
        // cover the slot mapping; `word` divides the row and every base address. The buffers are
        // borrowed by `plan` and freed only after the stream (this one) has finished with them.
        unsafe { b.launch(cfg) }.during(&format!("launching {}", plan.kernel))?;
        Ok(())
    }

    /// Gathers and leaves the copy in flight (see [`Gpu::gather_plan`]).
    pub fn gather(
        &self,
        cache: &PagedCache,
        slots: &[i64],
        chunk_tokens: &[usize],
        chunks: Vec<&mut ChunkBuf>,
        skip: usize,
    ) -> Result<(), GpuError> {
        let plan = self.gather_plan(cache, slots, chunk_tokens, chunks, skip)?;
        self.launch(&plan)
    }

    /// Scatters and leaves the copy in flight (see [`Gpu::scatter_plan`]).
    pub fn scatter(
        &self,
        cache: &PagedCache,
        slots: &[i64],
        chunk_tokens: &[usize],
        chunks: Vec<&ChunkBuf>,
        skip: usize,
    ) -> Result<(), GpuError> {
        let plan = self.scatter_plan(cache, slots, chunk_tokens, chunks, skip)?;
        self.launch(&plan)
    }

    /// Launches the empty kernel.
    pub fn launch_noop(&self) -> Result<(), GpuError> {
        let f = self.function(NOOP)?;
        let unused = 0i32;
        let mut b = self.stream.launch_builder(f);
        b.arg(&unused);
        let cfg = LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (32, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: `kv_noop(int)` takes one int and touches no memory.
        unsafe { b.launch(cfg) }.during("launching kv_noop")?;
        Ok(())
    }

    /// # Safety
    /// `dst` and `src` must each address `bytes` valid bytes that stay allocated until the
    /// stream has finished the copy (pageable host memory: until this returns).
    unsafe fn memcpy_raw(&self, dst: End, src: End, bytes: usize) -> Result<(), GpuError> {
        let s = self.stream.cu_stream();
        // SAFETY: the caller's contract.
        unsafe {
            match (dst, src) {
                (End::Device(d), End::Device(r)) => result::memcpy_dtod_async(d, r, bytes, s),
                (End::Device(d), End::Host(h)) => {
                    result::memcpy_htod_async(d, std::slice::from_raw_parts(h, bytes), s)
                }
                (End::Host(h), End::Device(r)) => {
                    result::memcpy_dtoh_async(std::slice::from_raw_parts_mut(h, bytes), r, s)
                }
                (End::Host(_), End::Host(_)) => {
                    return Err(GpuError::invalid("host to host is not a GPU copy"));
                }
            }
        }
        .during("cuMemcpyAsync")
    }

    /// Copies the first `bytes` bytes of `src` to `dst` with one memcpy (copy engine; device to
    /// device, or between the device and pinned or pageable host memory).
    pub fn copy(&self, dst: &mut ChunkBuf, src: &ChunkBuf, bytes: usize) -> Result<(), GpuError> {
        if bytes > dst.len() || bytes > src.len() {
            return Err(GpuError::invalid(format!(
                "copy of {bytes} bytes from {} into {} bytes",
                src.len(),
                dst.len()
            )));
        }
        // SAFETY: both ends hold `bytes` bytes; device and pinned buffers are freed only after
        // the stream is done (stream-ordered free, or a synchronise on drop); a pageable copy
        // has consumed (H2D) or filled (D2H) the host memory when cuMemcpy*Async returns.
        unsafe { self.memcpy_raw(dst.dst_end(&self.stream), src.src_end(&self.stream), bytes) }
    }

    /// vLLM's native offloader storing `blocks`: one memcpy per block per layer (per K and V
    /// in the FlashAttention layout) from `cache` into `dst`, packed in order. Returns the
    /// number of memcpys.
    pub fn store_blocks(
        &self,
        cache: &PagedCache,
        blocks: &[usize],
        dst: &mut ChunkBuf,
    ) -> Result<usize, GpuError> {
        let dst_end = dst.dst_end(&self.stream);
        self.block_copies(cache, blocks, dst.len(), |layer, region, at, n| {
            // SAFETY: `block_copies` checked both ranges lie in their buffers, which outlive the
            // stream's use as in `copy`.
            unsafe { self.memcpy_raw(offset(dst_end, at), End::Device(layer + region as u64), n) }
        })
    }

    /// vLLM's native offloader loading `blocks` back: the reverse of [`Gpu::store_blocks`].
    pub fn load_blocks(
        &self,
        cache: &PagedCache,
        blocks: &[usize],
        src: &ChunkBuf,
    ) -> Result<usize, GpuError> {
        let src_end = src.src_end(&self.stream);
        self.block_copies(cache, blocks, src.len(), |layer, region, at, n| {
            // SAFETY: as in `store_blocks`.
            unsafe { self.memcpy_raw(End::Device(layer + region as u64), offset(src_end, at), n) }
        })
    }

    fn block_copies(
        &self,
        cache: &PagedCache,
        blocks: &[usize],
        host_len: usize,
        mut copy: impl FnMut(u64, usize, usize, usize) -> Result<(), GpuError>,
    ) -> Result<usize, GpuError> {
        let s = cache.shape;
        if let Some(b) = blocks.iter().find(|b| **b >= s.num_blocks) {
            return Err(GpuError::invalid(format!(
                "block {b} is beyond the cache's {}",
                s.num_blocks
            )));
        }
        let need = blocks.len() * s.layers * 2 * s.block_size * s.row_bytes();
        if host_len < need {
            return Err(GpuError::invalid(format!(
                "{} blocks need {need} bytes, the buffer has {host_len}",
                blocks.len()
            )));
        }
        let layer_addrs: Vec<u64> = cache
            .layers
            .iter()
            .map(|l| l.device_ptr(&self.stream).0)
            .collect();
        let (mut at, mut n) = (0, 0);
        for &b in blocks {
            for &layer in &layer_addrs {
                for (region, len) in cache.block_regions(b) {
                    copy(layer, region, at, len)?;
                    at += len;
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// Times `op` `reps` times (after `warmup` untimed runs) with CUDA events around each run:
    /// GPU time per run, milliseconds.
    pub fn time_ms(
        &self,
        warmup: usize,
        reps: usize,
        mut op: impl FnMut() -> Result<(), GpuError>,
    ) -> Result<Vec<f64>, GpuError> {
        for _ in 0..warmup {
            op()?;
        }
        let events = (0..2 * reps)
            .map(|_| {
                self.ctx
                    .new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
            })
            .collect::<Result<Vec<CudaEvent>, _>>()
            .during("creating events")?;
        for pair in events.chunks(2) {
            pair[0].record(&self.stream).during("recording an event")?;
            op()?;
            pair[1].record(&self.stream).during("recording an event")?;
        }
        self.synchronize()?;
        events
            .chunks(2)
            .map(|p| {
                p[0].elapsed_ms(&p[1])
                    .map(f64::from)
                    .during("reading an event")
            })
            .collect()
    }

    /// Wall-clock microseconds of `op` followed by a stream synchronise, `reps` times after
    /// `warmup` runs: what a caller that waits for each chunk pays.
    pub fn wall_us(
        &self,
        warmup: usize,
        reps: usize,
        mut op: impl FnMut() -> Result<(), GpuError>,
    ) -> Result<Vec<f64>, GpuError> {
        for _ in 0..warmup {
            op()?;
            self.synchronize()?;
        }
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                op()?;
                self.synchronize()?;
                Ok(t.elapsed().as_secs_f64() * 1e6)
            })
            .collect()
    }
}

fn offset(e: End, at: usize) -> End {
    match e {
        End::Device(d) => End::Device(d + at as u64),
        // Stays inside the buffer: callers check `at + len <= buffer length`.
        End::Host(h) => End::Host(h.wrapping_add(at)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::reference::{Layout, slot_mapping};
    use crate::gpu::skip_line;
    use crate::util::rng::Rng;

    /// The GPU, or `None` after printing why the test is skipped.
    fn gpu_or_skip() -> Option<Gpu> {
        if let Err(why) = gpu_available() {
            println!("{}", skip_line(&why));
            return None;
        }
        match Gpu::new() {
            Ok(g) => Some(g),
            Err(GpuError::NoNvrtc) => {
                println!(
                    "skipped: libnvrtc not found (install nvidia-cuda-nvrtc-cu12 and set LD_LIBRARY_PATH)"
                );
                None
            }
            Err(e) => panic!("a GPU is present but the kernels could not be set up: {e}"),
        }
    }

    #[test]
    fn no_gpu_is_a_clean_error() {
        if let Err(why) = gpu_available() {
            let e = Gpu::new().unwrap_err();
            assert!(matches!(e, GpuError::Unavailable(_)), "{e}");
            assert_eq!(e.to_string(), why);
            println!("{}", skip_line(&why));
        }
    }

    struct Case {
        shape: PagedShape,
        slots: Vec<i64>,
        chunk_tokens: Vec<usize>,
        skip: usize,
    }

    /// A random transfer: odd block sizes, a shuffled block table that starts mid-block, partial
    /// last chunks, some negative slots, a random skip.
    fn random_case(rng: &mut Rng, layout: Layout, elem_bytes: usize, row: (usize, usize)) -> Case {
        let block_size = [1, 3, 5, 7, 16, 17][rng.range(0, 5) as usize];
        let num_blocks = rng.range(3, 40) as usize;
        let shape = PagedShape {
            layout,
            layers: rng.range(1, 5) as usize,
            num_blocks,
            block_size,
            kv_heads: row.0,
            head_dim: row.1,
            elem_bytes,
        };
        let mut table: Vec<i64> = (0..num_blocks as i64).collect();
        for i in (1..table.len()).rev() {
            table.swap(i, rng.range(0, i as u64) as usize);
        }
        let first = rng.range(0, block_size as u64 - 1) as usize;
        let tokens = rng.range(1, (num_blocks * block_size - first) as u64) as usize;
        let mut slots = slot_mapping(&table, block_size, first, tokens).unwrap();
        for s in slots.iter_mut() {
            if rng.range(0, 9) == 0 {
                *s = -1;
            }
        }
        let per_chunk = rng.range(1, tokens as u64) as usize;
        let mut chunk_tokens = vec![per_chunk; tokens / per_chunk];
        if !tokens.is_multiple_of(per_chunk) {
            chunk_tokens.push(tokens % per_chunk);
        }
        let skip = if rng.range(0, 2) == 0 {
            0
        } else {
            rng.range(0, tokens as u64) as usize
        };
        Case {
            shape,
            slots,
            chunk_tokens,
            skip,
        }
    }

    fn random_bytes(rng: &mut Rng, n: usize) -> Vec<u8> {
        (0..n).map(|_| rng.next_u64() as u8).collect()
    }

    /// Rows (kv_heads, head_dim) whose byte size with 1- and 2-byte elements makes every word
    /// size (16, 8, 4, 1) come up.
    const ROWS: [(usize, usize); 5] = [(8, 128), (2, 4), (1, 2), (1, 3), (3, 5)];

    /// Every word size the kernels may use for rows of this shape (up to the widest the
    /// host would pick).
    fn words_to_test(s: &PagedShape) -> Vec<usize> {
        let widest = reference::word_bytes(s.row_bytes(), &[256]);
        reference::WORD_SIZES
            .into_iter()
            .filter(|w| *w <= widest && s.row_bytes().is_multiple_of(*w))
            .collect()
    }

    fn check_gather(gpu: &Gpu, rng: &mut Rng, c: &Case, kind: MemKind, words: &mut Vec<usize>) {
        let s = c.shape;
        let layers: Vec<Vec<u8>> = (0..s.layers)
            .map(|_| random_bytes(rng, s.layer_bytes()))
            .collect();
        let lrefs: Vec<&[u8]> = layers.iter().map(|l| l.as_slice()).collect();
        let cache = gpu.cache_from(s, &lrefs).unwrap();
        let mut want: Vec<Vec<u8>> = c
            .chunk_tokens
            .iter()
            .map(|n| vec![0x5Au8; s.chunk_bytes(*n)])
            .collect();
        let mut wrefs: Vec<&mut [u8]> = want.iter_mut().map(|w| w.as_mut_slice()).collect();
        reference::gather(&s, &lrefs, &c.slots, &c.chunk_tokens, c.skip, &mut wrefs).unwrap();
        for w in words_to_test(&s) {
            let mut bufs: Vec<ChunkBuf> = c
                .chunk_tokens
                .iter()
                .map(|n| gpu.alloc_chunk(kind, s.chunk_bytes(*n), 0x5A).unwrap())
                .collect();
            {
                let mut plan = gpu
                    .gather_plan(
                        &cache,
                        &c.slots,
                        &c.chunk_tokens,
                        bufs.iter_mut().collect(),
                        c.skip,
                    )
                    .unwrap();
                plan.set_word(w).unwrap();
                words.push(plan.word());
                gpu.launch(&plan).unwrap();
            }
            for (i, b) in bufs.iter().enumerate() {
                assert!(
                    b.to_vec(gpu).unwrap() == want[i],
                    "gather {:?} to {kind:?}, word {w}, chunk {i}: {s:?} chunks {:?} skip {}",
                    s.layout,
                    c.chunk_tokens,
                    c.skip
                );
            }
        }
    }

    fn check_scatter(gpu: &Gpu, rng: &mut Rng, c: &Case, kind: MemKind, words: &mut Vec<usize>) {
        let s = c.shape;
        let layers: Vec<Vec<u8>> = (0..s.layers)
            .map(|_| random_bytes(rng, s.layer_bytes()))
            .collect();
        let chunks: Vec<Vec<u8>> = c
            .chunk_tokens
            .iter()
            .map(|n| random_bytes(rng, s.chunk_bytes(*n)))
            .collect();
        let crefs: Vec<&[u8]> = chunks.iter().map(|x| x.as_slice()).collect();
        let mut want = layers.clone();
        let mut wrefs: Vec<&mut [u8]> = want.iter_mut().map(|w| w.as_mut_slice()).collect();
        reference::scatter(&s, &mut wrefs, &c.slots, &c.chunk_tokens, c.skip, &crefs).unwrap();
        let bufs: Vec<ChunkBuf> = chunks
            .iter()
            .map(|x| gpu.chunk_from(kind, x).unwrap())
            .collect();
        for w in words_to_test(&s) {
            let lrefs: Vec<&[u8]> = layers.iter().map(|l| l.as_slice()).collect();
            let cache = gpu.cache_from(s, &lrefs).unwrap();
            {
                let mut plan = gpu
                    .scatter_plan(
                        &cache,
                        &c.slots,
                        &c.chunk_tokens,
                        bufs.iter().collect(),
                        c.skip,
                    )
                    .unwrap();
                plan.set_word(w).unwrap();
                words.push(plan.word());
                gpu.launch(&plan).unwrap();
            }
            let got = cache.to_host(gpu).unwrap();
            for l in 0..s.layers {
                assert!(
                    got[l] == want[l],
                    "scatter {:?} from {kind:?}, word {w}, layer {l}: {s:?} chunks {:?} skip {}",
                    s.layout,
                    c.chunk_tokens,
                    c.skip
                );
            }
        }
    }

    #[test]
    fn kernels_match_the_reference_bit_for_bit() {
        let Some(gpu) = gpu_or_skip() else { return };
        let mut rng = Rng::new(2024);
        let mut words = Vec::new();
        for layout in Layout::ALL {
            for elem in [1, 2] {
                for row in ROWS {
                    for kind in [MemKind::Device, MemKind::Pinned] {
                        for _ in 0..3 {
                            let c = random_case(&mut rng, layout, elem, row);
                            check_gather(&gpu, &mut rng, &c, kind, &mut words);
                            check_scatter(&gpu, &mut rng, &c, kind, &mut words);
                        }
                    }
                }
            }
        }
        for w in reference::WORD_SIZES {
            assert!(words.contains(&w), "word size {w} never tested");
        }
    }

    #[test]
    fn llama_shapes_use_16_byte_words_and_match() {
        let Some(gpu) = gpu_or_skip() else { return };
        let mut rng = Rng::new(8);
        for layout in Layout::ALL {
            let c = Case {
                shape: PagedShape {
                    layout,
                    layers: 4,
                    num_blocks: 40,
                    block_size: 16,
                    kv_heads: 8,
                    head_dim: 128,
                    elem_bytes: 2,
                },
                slots: slot_mapping(&(0..40).rev().collect::<Vec<i64>>(), 16, 0, 600).unwrap(),
                chunk_tokens: vec![256, 256, 88],
                skip: 100,
            };
            let mut words = Vec::new();
            check_gather(&gpu, &mut rng, &c, MemKind::Pinned, &mut words);
            check_scatter(&gpu, &mut rng, &c, MemKind::Device, &mut words);
            assert_eq!(words[0], 16);
        }
    }

    #[test]
    fn memcpy_and_block_copies_move_the_right_bytes() {
        let Some(gpu) = gpu_or_skip() else { return };
        let mut rng = Rng::new(3);
        for layout in Layout::ALL {
            let s = PagedShape {
                layout,
                layers: 3,
                num_blocks: 7,
                block_size: 5,
                kv_heads: 2,
                head_dim: 4,
                elem_bytes: 2,
            };
            let layers: Vec<Vec<u8>> = (0..3)
                .map(|_| random_bytes(&mut rng, s.layer_bytes()))
                .collect();
            let lrefs: Vec<&[u8]> = layers.iter().map(|l| l.as_slice()).collect();
            let cache = gpu.cache_from(s, &lrefs).unwrap();
            let blocks = [4, 1, 6];
            let bytes = blocks.len() * s.layers * 2 * s.block_size * s.row_bytes();
            let mut host = gpu.alloc_chunk(MemKind::Pinned, bytes, 0).unwrap();
            let n = gpu.store_blocks(&cache, &blocks, &mut host).unwrap();
            assert_eq!(
                n,
                blocks.len() * s.layers * if layout == Layout::Flash { 2 } else { 1 }
            );
            let mut want = Vec::new();
            for &b in &blocks {
                for l in &layers {
                    for (o, len) in cache.block_regions(b) {
                        want.extend_from_slice(&l[o..o + len]);
                    }
                }
            }
            assert_eq!(host.to_vec(&gpu).unwrap(), want);
            let back = gpu.alloc_cache(s, 0).unwrap();
            gpu.load_blocks(&back, &blocks, &host).unwrap();
            let got = back.to_host(&gpu).unwrap();
            for (l, layer) in layers.iter().enumerate() {
                for &b in &blocks {
                    for (o, len) in cache.block_regions(b) {
                        assert_eq!(got[l][o..o + len], layer[o..o + len]);
                    }
                }
            }
            // Plain memcpys between every kind of memory.
            let data = random_bytes(&mut rng, 4096);
            let dev = gpu.chunk_from(MemKind::Device, &data).unwrap();
            for kind in [MemKind::Device, MemKind::Pinned, MemKind::Pageable] {
                let mut dst = gpu.alloc_chunk(kind, 4096, 0).unwrap();
                gpu.copy(&mut dst, &dev, 4096).unwrap();
                assert_eq!(dst.to_vec(&gpu).unwrap(), data, "{kind:?}");
                let mut dev2 = gpu.alloc_chunk(MemKind::Device, 4096, 0).unwrap();
                gpu.copy(&mut dev2, &dst, 4096).unwrap();
                assert_eq!(dev2.to_vec(&gpu).unwrap(), data, "{kind:?}");
            }
        }
    }

    #[test]
    fn timing_and_noop_work() {
        let Some(gpu) = gpu_or_skip() else { return };
        let t = gpu.time_ms(1, 5, || gpu.launch_noop()).unwrap();
        assert_eq!(t.len(), 5);
        assert!(t.iter().all(|x| *x >= 0.0 && *x < 100.0), "{t:?}");
        let w = gpu.wall_us(1, 5, || gpu.launch_noop()).unwrap();
        assert!(w.iter().all(|x| *x > 0.0), "{w:?}");
    }

    #[test]
    fn invalid_plans_are_refused() {
        let Some(gpu) = gpu_or_skip() else { return };
        let s = PagedShape {
            layout: Layout::Flash,
            layers: 1,
            num_blocks: 2,
            block_size: 2,
            kv_heads: 1,
            head_dim: 8,
            elem_bytes: 2,
        };
        let cache = gpu.alloc_cache(s, 0).unwrap();
        let mut pageable = gpu
            .alloc_chunk(MemKind::Pageable, s.chunk_bytes(2), 0)
            .unwrap();
        let e = gpu
            .gather_plan(&cache, &[0, 1], &[2], vec![&mut pageable], 0)
            .unwrap_err();
        assert!(e.to_string().contains("pageable"), "{e}");
        let mut dev = gpu
            .alloc_chunk(MemKind::Device, s.chunk_bytes(2), 0)
            .unwrap();
        let e = gpu
            .gather_plan(&cache, &[0, 9], &[2], vec![&mut dev], 0)
            .unwrap_err();
        assert!(e.to_string().contains("beyond"), "{e}");
    }
}
