"""Every measured tuning constant, in one place, each named for what it sets (the backends read them at call time)."""

# --- threads (fastconv._threads) ---------------------------------------------------------------
# Below these amounts of work per thread, waking another thread costs more than it saves: the
# call runs on fewer threads, down to the calling thread alone (as PyTorch's GRAIN_SIZE).
GRAIN_ELEMENTS = 32768  # elementwise work: elements (a few tens of microseconds)
GRAIN_FLOPS = 2e6  # convolutions and GEMMs: floating-point operations
# Work split into several items per thread (cython's backward chunks, numba's blocks), so a
# thread slowed by other processes does not hold up the rest; results stay fixed per count.
WORK_ITEMS_PER_THREAD = 4

# --- cython: im2col tiles and images per GEMM --------------------------------------------------
# A column tile this size stays near the core's L2 cache while giving GEMM wide enough panels...
CYTHON_COL_TILE_BYTES = 1 << 20
# ...but never fewer output positions than this: the dw GEMM sums over a tile's positions, and
# a shorter sum leaves it too little work per pass over dw (measured: deep float64 layers
# such as res-c128, 112 positions at 1 MiB, ran ~10 % slower).
CYTHON_MIN_TILE_POSITIONS = 256
# Images with fewer output positions than this share a work item, side by side in one GEMM
# per thread: a GEMM over one small image is too short to pay for packing the weights...
CYTHON_SHARED_GEMM_BELOW_POSITIONS = 1024
# ...but their columns stay within about this size, in the core's L2 cache (measured on a
# 1 MiB-L2 core: down-s2 and res-c128 (GEMM path) forward+backward 7-30 % faster than with
# 5 MiB, which a 4 MiB-L2 core had favoured; none slower).
CYTHON_SAMPLE_GROUP_BYTES = 2**20

# --- cython: Winograd F(2x2, 3x3) --------------------------------------------------------------
# 3x3 / stride 1 convs this wide go through Winograd: the tile transforms are cheap beside the
# GEMMs once both channel counts reach this (measured: 1.3-1.8x faster from 16 channels and
# filters, 0.6x at 8 in float64).
WINOGRAD_MIN_CHANNELS = 16
# A block's transformed inputs and outputs stay about this size, in the core's cache between
# the transforms and the GEMMs (measured: 16 tiles for res-c128, 32 for vgg-c64 were fastest).
WINOGRAD_BLOCK_BYTES = 512 * 2**10

# --- numba -------------------------------------------------------------------------------------
# A GEMM whose inner dimension is this short loses much of its speed to packing overhead, so
# backward lays this many output positions side by side (several samples when images are small).
NUMBA_BACKWARD_MIN_GEMM_COLUMNS = 256

# --- im2col (numpy) ----------------------------------------------------------------------------
# Chunks whose cols fit in cache: the GEMM then reads what the strided copy just wrote
# (measured faster than 64 MiB chunks on most of the conv suite).
IM2COL_COLS_CHUNK_BYTES = 4 * 2**20
