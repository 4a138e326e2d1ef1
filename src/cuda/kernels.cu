// genimg's CUDA kernels, compiled at run time by NVRTC (src/cuda/kernels.rs). Every array is
// f32 and contiguous; sizes are size_t; each kernel is a grid-stride loop, so any grid covers
// its range. Each is the CUDA peer of a `cpu_fwd` of the same op, whose Rust loop is the
// reference its tests compare with: gate_* and causal_* in src/models/pixelcnn/kernels.rs
// (Gate, GateGrad, Unfold, Fold).

#define GRID_STRIDE(i, n) \
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (size_t)blockDim.x * gridDim.x)

__device__ __forceinline__ float sigmoid_f(float x) { return 1.0f / (1.0f + expf(-x)); }

// out [rows, c] = tanh(f) * sigmoid(g), where a [rows, 2c] holds f then g in each row.
extern "C" __global__ void gate_fwd(const float *a, float *out, size_t rows, size_t c) {
  GRID_STRIDE(i, rows * c) {
    size_t r = i / c, j = i % c;
    float f = a[r * 2 * c + j], g = a[r * 2 * c + c + j];
    out[i] = tanhf(f) * sigmoid_f(g);
  }
}

// da [rows, 2c], the gate's input gradient from its output gradient dy [rows, c].
extern "C" __global__ void gate_bwd(const float *a, const float *dy, float *da, size_t rows, size_t c) {
  GRID_STRIDE(i, rows * c) {
    size_t r = i / c, j = i % c;
    float t = tanhf(a[r * 2 * c + j]), s = sigmoid_f(a[r * 2 * c + c + j]);
    da[r * 2 * c + j] = dy[i] * (1.0f - t * t) * s;
    da[r * 2 * c + c + j] = dy[i] * t * s * (1.0f - s);
  }
}

// im2col of maps x [pixels, c] (pixels = N h w) for stride-1 taps (dy, dx) = (taps[2t],
// taps[2t+1]), t < n_taps: u [pixels, n_taps c], u[p, t c + ch] = x[p + tap t, ch] where that
// pixel is inside p's map, else 0.
extern "C" __global__ void causal_unfold(const float *x, float *u, const long long *taps, size_t pixels, size_t c,
                                         size_t n_taps, size_t h, size_t w) {
  size_t hw = h * w;
  GRID_STRIDE(idx, pixels * n_taps * c) {
    size_t ch = idx % c, t = (idx / c) % n_taps, p = idx / (c * n_taps);
    size_t q = p % hw;
    long long i = (long long)(q / w) + taps[2 * t], j = (long long)(q % w) + taps[2 * t + 1];
    bool inside = i >= 0 && i < (long long)h && j >= 0 && j < (long long)w;
    u[idx] = inside ? x[(p - q + (size_t)i * w + (size_t)j) * c + ch] : 0.0f;
  }
}

// The adjoint of causal_unfold: dx [pixels, c], dx[p, ch] = the sum over taps t of
// du[p - tap t, t c + ch] where that pixel is inside p's map. A gather, so no atomics.
extern "C" __global__ void causal_fold(const float *du, float *dx, const long long *taps, size_t pixels, size_t c,
                                       size_t n_taps, size_t h, size_t w) {
  size_t hw = h * w;
  GRID_STRIDE(idx, pixels * c) {
    size_t ch = idx % c, p = idx / c;
    size_t q = p % hw;
    long long i0 = (long long)(q / w), j0 = (long long)(q % w);
    float sum = 0.0f;
    for (size_t t = 0; t < n_taps; ++t) {
      long long i = i0 - taps[2 * t], j = j0 - taps[2 * t + 1];
      if (i >= 0 && i < (long long)h && j >= 0 && j < (long long)w) {
        sum += du[((p - q + (size_t)i * w + (size_t)j) * n_taps + t) * c + ch];
      }
    }
    dx[idx] = sum;
  }
}
