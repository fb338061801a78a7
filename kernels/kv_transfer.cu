// KV-cache copy kernels: LMCache's `multi_layer_kv_transfer` between vLLM's paged cache and
// LMCache's contiguous chunk layout, for all layers in one launch.
//
// Paged cache, one allocation per layer (a device array holds the per-layer base addresses):
//   layout 0, FlashAttention: [2, num_blocks, block_size, kv_heads, head_dim]
//   layout 1, FlashInfer:     [num_blocks, 2, block_size, kv_heads, head_dim]
// Token t of a request lives at slot = block_table[t / block_size] * block_size + t % block_size.
//
// Chunk layout (LMCache KV_2LTD), one buffer per chunk: [2, layers, tokens, kv_heads * head_dim].
// Several chunks go in one launch: chunk c covers tokens [chunk_starts[c], chunk_starts[c + 1])
// of the launch's token stream (and of `slot_mapping`), and its buffer is at chunk_ptrs[c]. A
// chunk buffer may be GPU memory or pinned host memory (zero copy: under UVA a pinned host
// address is a device address).
//
// Grid (tokens - skip, layers, 2), one thread block per token row (one token, one layer, K or V),
// the block's threads striding over the row in words of type W. The first `skip` tokens of the
// stream (already present at the destination) and tokens whose slot is negative are not copied.
//
// The copy is of bytes, whatever the element type (bf16, fp16, fp8): W is uint4 (16 bytes),
// uint2 (8), unsigned int (4) or unsigned char (1), the widest word that divides the row size and
// every base address (the host picks it). Offsets are 64-bit throughout.

namespace kvt {

// Row index (in rows of kv_heads * head_dim elements) of (kv, slot) in one layer's cache.
template <int LAYOUT>
__device__ __forceinline__ long long paged_row(int kv, long long slot, long long num_blocks,
                                               long long block_size) {
    if (LAYOUT == 0) {
        return (long long)kv * num_blocks * block_size + slot;
    } else {
        const long long block = slot / block_size;
        const long long in_block = slot - block * block_size;
        return (block * 2 + kv) * block_size + in_block;
    }
}

// The chunk holding token t: the last c with chunk_starts[c] <= t (chunk_starts ascending,
// chunk_starts[0] == 0).
__device__ __forceinline__ int chunk_of(const long long* chunk_starts, int num_chunks,
                                        long long t) {
    int lo = 0;
    int hi = num_chunks - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) >> 1;
        if (chunk_starts[mid] <= t) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    return lo;
}

// Copies one token row; GATHER: paged cache -> chunk, otherwise chunk -> paged cache.
template <typename W, int LAYOUT, bool GATHER>
__device__ __forceinline__ void transfer_row(const unsigned long long* layer_ptrs,
                                             const unsigned long long* chunk_ptrs,
                                             const long long* chunk_starts, int num_chunks,
                                             const long long* slot_mapping, long long skip,
                                             long long num_blocks, long long block_size,
                                             long long row_words) {
    const long long t = skip + (long long)blockIdx.x;
    const int layer = (int)blockIdx.y;
    const int kv = (int)blockIdx.z;
    const long long slot = slot_mapping[t];
    if (slot < 0) {
        return;
    }
    const int c = chunk_of(chunk_starts, num_chunks, t);
    const long long start = chunk_starts[c];
    const long long tokens = chunk_starts[c + 1] - start;
    W* paged = reinterpret_cast<W*>(layer_ptrs[layer]) +
               paged_row<LAYOUT>(kv, slot, num_blocks, block_size) * row_words;
    W* chunk = reinterpret_cast<W*>(chunk_ptrs[c]) +
               (((long long)kv * gridDim.y + layer) * tokens + (t - start)) * row_words;
    for (long long i = threadIdx.x; i < row_words; i += blockDim.x) {
        if (GATHER) {
            chunk[i] = paged[i];
        } else {
            paged[i] = chunk[i];
        }
    }
}

}  // namespace kvt

// Arguments, the same for every copy kernel:
//   layer_ptrs    [layers] base address of each layer's paged cache
//   chunk_ptrs    [num_chunks] address of each chunk buffer (GPU or pinned host)
//   chunk_starts  [num_chunks + 1] first token of each chunk in the launch's token stream
//   num_chunks    chunks in this launch
//   slot_mapping  [tokens] slot of each token of the stream (negative: not copied)
//   skip          leading tokens of the stream not copied (grid.x = tokens - skip)
//   num_blocks    blocks per layer in the paged cache
//   block_size    tokens per block
//   row_words     words of type W per token row (kv_heads * head_dim * element bytes / sizeof(W))
#define KVT_ARGS                                                                              \
    const unsigned long long *layer_ptrs, const unsigned long long *chunk_ptrs,               \
        const long long *chunk_starts, int num_chunks, const long long *slot_mapping,         \
        long long skip, long long num_blocks, long long block_size, long long row_words
#define KVT_PASS                                                                              \
    layer_ptrs, chunk_ptrs, chunk_starts, num_chunks, slot_mapping, skip, num_blocks,         \
        block_size, row_words

#define KVT_DEFINE(LAYOUT_NAME, LAYOUT, WORD_NAME, W)                                        \
    extern "C" __global__ void kv_gather_##LAYOUT_NAME##_##WORD_NAME(KVT_ARGS) {             \
        kvt::transfer_row<W, LAYOUT, true>(KVT_PASS);                                         \
    }                                                                                         \
    extern "C" __global__ void kv_scatter_##LAYOUT_NAME##_##WORD_NAME(KVT_ARGS) {            \
        kvt::transfer_row<W, LAYOUT, false>(KVT_PASS);                                        \
    }

KVT_DEFINE(flash, 0, w16, uint4)
KVT_DEFINE(flash, 0, w8, uint2)
KVT_DEFINE(flash, 0, w4, unsigned int)
KVT_DEFINE(flash, 0, w1, unsigned char)
KVT_DEFINE(flashinfer, 1, w16, uint4)
KVT_DEFINE(flashinfer, 1, w8, uint2)
KVT_DEFINE(flashinfer, 1, w4, unsigned int)
KVT_DEFINE(flashinfer, 1, w1, unsigned char)

// An empty launch: what launching a kernel and waiting for it costs, nothing else.
extern "C" __global__ void kv_noop(int unused) {
    (void)unused;
}
