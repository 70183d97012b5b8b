// Per-token int8 quantisation of one tile of the int8 HP kernel. hp_linear_int8.cpp includes
// it inside each code path's namespace (and compiler target region, so that the rounding
// and the clamps vectorise), after defining TILE (tokens per tile).
//
// Tokens [t0, t0 + nt) of x: sx[t] = max|x[t]| / 127 (0 for an all-zero token) and
// xp[q * TILE + t] = the 4 int8 codes of columns 4q .. 4q + 3 (beyond N: 0), each XOR
// `flip` (0x80808080 turns the codes into VNNI's unsigned xq + 128; 0 keeps them signed).
// Codes: nearest even of x * (127 / max|x[t]|), clamped to [-127, 127]. Lanes t >= nt hold
// zero codes (XOR flip). A row is coded in chunks of CHUNK columns through `codes` (4 KiB
// on the stack: a chunk ends on a quad boundary, so every quad is read within one chunk).
inline void quantise_tile(const Int8Args& a, int64_t t0, int64_t nt, uint32_t flip,
                          int32_t* xp, float* sx) {
  const int64_t N = a.N, Nq = a.Nq;
  constexpr int64_t CHUNK = 4096;
  alignas(64) int8_t codes[CHUNK];
  for (int64_t t = 0; t < TILE; ++t) {
    if (t >= nt) {
      sx[t] = 0.0f;
      for (int64_t q = 0; q < Nq; ++q) xp[q * TILE + t] = static_cast<int32_t>(flip);
      continue;
    }
    const float* xr = a.x + (t0 + t) * N;
    float amax = 0.0f;
    for (int64_t n = 0; n < N; ++n) amax = std::max(amax, std::fabs(xr[n]));
    const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
    sx[t] = amax / 127.0f;
    for (int64_t n0 = 0; n0 < N; n0 += CHUNK) {
      const int64_t n1 = std::min(N, n0 + CHUNK);
      for (int64_t n = n0; n < n1; ++n)
        codes[n - n0] = static_cast<int8_t>(
            std::nearbyint(std::min(127.0f, std::max(-127.0f, xr[n] * inv))));
      for (int64_t n = n1; n < n0 + CHUNK && n < 4 * Nq; ++n) codes[n - n0] = 0;
      for (int64_t q = n0 / 4; q < (std::min(4 * Nq, n0 + CHUNK) + 3) / 4; ++q) {
        uint32_t word;
        std::memcpy(&word, codes + 4 * q - n0, 4);
        xp[q * TILE + t] = static_cast<int32_t>(word ^ flip);
      }
    }
  }
}
