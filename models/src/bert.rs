//! A lean BERT encoder forward pass for sentence embeddings (MiniLM).
//!
//! Same weights and same arithmetic as `candle_transformers::models::bert`, arranged for CPU
//! throughput: the query/key/value projections are one matrix product, weights are stored
//! pre-transposed and contiguous (no per-call re-layout), and the feed-forward bias and exact
//! (erf) GELU run as one vectorisable pass instead of libm's scalar `erff` per element, which
//! profiled at 14% of a MiniLM forward pass.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Device, Layout, Shape, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{Config, HiddenAct, PositionEmbeddingType};

/// A vector parameter, as a tensor (for devices other than the CPU) and as plain numbers (for
/// the fused CPU kernels).
struct Param {
    t: Tensor,
    v: Vec<f32>,
}

impl Param {
    fn new(t: Tensor) -> candle_core::Result<Self> {
        let v = t.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        Ok(Self { t, v })
    }
}

struct Norm {
    gamma: Param,
    beta: Param,
}

struct Layer {
    /// `(hidden, 3 * hidden)`: query (pre-scaled by `1/sqrt(head_dim)`), key and value
    /// projections side by side.
    qkv_w: Tensor,
    qkv_b: Param,
    out_w: Tensor,
    out_b: Param,
    ln1: Norm,
    up_w: Tensor,
    up_b: Param,
    down_w: Tensor,
    down_b: Param,
    ln2: Norm,
}

/// A BERT encoder.
pub struct Bert {
    word: Tensor,
    position: Tensor,
    /// Token type 0's embedding: every input is a single sentence.
    type0: Param,
    embed_ln: Norm,
    layers: Vec<Layer>,
    heads: usize,
    head_dim: usize,
    eps: f32,
}

/// A linear layer's weight as `(in, out)`, contiguous, and its bias.
fn linear(
    vb: &VarBuilder,
    name: &str,
    input: usize,
    output: usize,
) -> candle_core::Result<(Tensor, Tensor)> {
    let vb = vb.pp(name);
    let w = vb.get((output, input), "weight")?.t()?.contiguous()?;
    let b = vb.get(output, "bias")?;
    Ok((w, b))
}

fn norm(vb: &VarBuilder, name: &str, size: usize) -> candle_core::Result<Norm> {
    let vb = vb.pp(name);
    Ok(Norm {
        gamma: Param::new(vb.get(size, "weight")?)?,
        beta: Param::new(vb.get(size, "bias")?)?,
    })
}

impl Bert {
    /// Load from a `VarBuilder` over a BERT checkpoint (names with or without a `bert.` prefix).
    pub fn load(vb: VarBuilder, config: &Config) -> candle_core::Result<Self> {
        let vb = if vb.contains_tensor("embeddings.word_embeddings.weight") {
            vb
        } else {
            vb.pp("bert")
        };
        // The fused kernels implement BERT's exact GELU and absolute positions only: refuse
        // other variants rather than embed with the wrong arithmetic.
        if !matches!(config.hidden_act, HiddenAct::Gelu) {
            candle_core::bail!(
                "activation {:?} is not supported (only exact GELU)",
                config.hidden_act
            );
        }
        if !matches!(
            config.position_embedding_type,
            PositionEmbeddingType::Absolute
        ) {
            candle_core::bail!("only absolute position embeddings are supported");
        }
        let h = config.hidden_size;
        let heads = config.num_attention_heads;
        if heads == 0 || h % heads != 0 {
            candle_core::bail!("hidden size {h} does not split into {heads} heads");
        }
        let scale = 1.0 / ((h / heads) as f64).sqrt();
        let e = vb.pp("embeddings");
        let word = e.get((config.vocab_size, h), "word_embeddings.weight")?;
        let position = e.get(
            (config.max_position_embeddings, h),
            "position_embeddings.weight",
        )?;
        let type0 = Param::new(
            e.get((config.type_vocab_size, h), "token_type_embeddings.weight")?
                .get(0)?,
        )?;
        let embed_ln = norm(&e, "LayerNorm", h)?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let l = vb.pp(format!("encoder.layer.{i}"));
            let a = l.pp("attention");
            let (qw, qb) = linear(&a, "self.query", h, h)?;
            let (kw, kb) = linear(&a, "self.key", h, h)?;
            let (vw, vbias) = linear(&a, "self.value", h, h)?;
            let (out_w, out_b) = linear(&a, "output.dense", h, h)?;
            let (up_w, up_b) = linear(&l, "intermediate.dense", h, config.intermediate_size)?;
            let (down_w, down_b) = linear(&l, "output.dense", config.intermediate_size, h)?;
            layers.push(Layer {
                qkv_w: Tensor::cat(&[&(qw * scale)?, &kw, &vw], 1)?.contiguous()?,
                qkv_b: Param::new(Tensor::cat(&[&(qb * scale)?, &kb, &vbias], 0)?)?,
                out_w,
                out_b: Param::new(out_b)?,
                ln1: norm(&a, "output.LayerNorm", h)?,
                up_w,
                up_b: Param::new(up_b)?,
                down_w,
                down_b: Param::new(down_b)?,
                ln2: norm(&l, "output.LayerNorm", h)?,
            });
        }
        Ok(Self {
            word,
            position,
            type0,
            embed_ln,
            layers,
            heads,
            head_dim: h / heads,
            eps: config.layer_norm_eps as f32,
        })
    }

    /// Hidden states `(batch, tokens, hidden)` of token ids `(batch, tokens)`; `mask` is 1 for
    /// real tokens and 0 for padding. All token type ids are 0, as for single sentences.
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let hidden = self.word.dim(1)?;
        let (heads, d) = (self.heads, self.head_dim);
        let n = b * t;
        let words = self.word.index_select(&ids.flatten_all()?, 0)?;
        let positions = self.position.narrow(0, 0, t)?.contiguous()?;
        let mut x = self.embed(&words, &positions, t)?;
        let mask = mask.to_dtype(DType::F32)?.contiguous()?;
        for l in &self.layers {
            let qkv = bias_add(&x.matmul(&l.qkv_w)?, &l.qkv_b)?
                .reshape((b, t, 3, heads, d))?
                .permute((2, 0, 3, 1, 4))?
                .contiguous()?;
            let (q, k, v) = (qkv.get(0)?, qkv.get(1)?, qkv.get(2)?);
            let probs = masked_softmax(&q.matmul(&k.t()?)?, &mask)?;
            let ctx = probs
                .matmul(&v)?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((n, hidden))?;
            let attn = add_norm(&ctx.matmul(&l.out_w)?, &l.out_b, &x, &l.ln1, self.eps)?;
            let up = bias_gelu(&attn.matmul(&l.up_w)?, &l.up_b)?;
            x = add_norm(&up.matmul(&l.down_w)?, &l.down_b, &attn, &l.ln2, self.eps)?;
        }
        x.reshape((b, t, hidden))
    }

    /// LayerNorm(word + position + token type 0) per token, as `(batch * tokens, hidden)`.
    fn embed(&self, words: &Tensor, positions: &Tensor, t: usize) -> candle_core::Result<Tensor> {
        let ln = &self.embed_ln;
        match words.device() {
            Device::Cpu => words.apply_op2_no_bwd(
                positions,
                &EmbedNorm {
                    tokens: t,
                    type0: &self.type0.v,
                    norm: ln,
                    eps: self.eps,
                },
            ),
            _ => {
                let (n, h) = words.dims2()?;
                let x = words
                    .reshape((n / t, t, h))?
                    .broadcast_add(positions)?
                    .broadcast_add(&self.type0.t)?;
                candle_nn::ops::layer_norm(&x, &ln.gamma.t, &ln.beta.t, self.eps)?.reshape((n, h))
            }
        }
    }
}

/// `x + bias` over the last dimension.
fn bias_add(x: &Tensor, bias: &Param) -> candle_core::Result<Tensor> {
    match x.device() {
        Device::Cpu => x.apply_op1_no_bwd(&RowOp {
            bias: &bias.v,
            gelu: false,
        }),
        _ => x.broadcast_add(&bias.t),
    }
}

/// `gelu(x + bias)` over the last dimension, with the exact (erf) GELU BERT was trained with.
fn bias_gelu(x: &Tensor, bias: &Param) -> candle_core::Result<Tensor> {
    match x.device() {
        Device::Cpu => x.apply_op1_no_bwd(&RowOp {
            bias: &bias.v,
            gelu: true,
        }),
        _ => x.broadcast_add(&bias.t)?.gelu_erf(),
    }
}

/// `LayerNorm(y + bias + residual)`.
fn add_norm(
    y: &Tensor,
    bias: &Param,
    residual: &Tensor,
    norm: &Norm,
    eps: f32,
) -> candle_core::Result<Tensor> {
    match y.device() {
        Device::Cpu => y.apply_op2_no_bwd(
            residual,
            &AddNorm {
                bias: &bias.v,
                norm,
                eps,
            },
        ),
        _ => {
            let x = (y.broadcast_add(&bias.t)? + residual)?;
            candle_nn::ops::layer_norm(&x, &norm.gamma.t, &norm.beta.t, eps)
        }
    }
}

/// Softmax over the keys of `(batch, heads, queries, keys)` scores, padding keys (mask 0 in
/// `(batch, keys)`) weighted 0.
fn masked_softmax(scores: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
    match scores.device() {
        Device::Cpu => scores.apply_op2_no_bwd(mask, &MaskedSoftmax),
        _ => {
            let (b, _, _, t) = scores.dims4()?;
            let bias = ((mask - 1.0)? * 1.0e9)?.reshape((b, 1, 1, t))?;
            candle_nn::ops::softmax_last_dim(&scores.broadcast_add(&bias)?)
        }
    }
}

/// The contiguous f32 data of a CPU tensor.
fn f32s<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("{op} takes f32 tensors");
    };
    let Some((a, b)) = l.contiguous_offsets() else {
        candle_core::bail!("{op} takes contiguous tensors");
    };
    Ok(&v[a..b])
}

/// Rows of `width`, checked.
fn rows(len: usize, width: usize, op: &str) -> candle_core::Result<()> {
    if width == 0 || len % width != 0 {
        candle_core::bail!("{op}: {len} numbers do not make rows of {width}");
    }
    Ok(())
}

/// Floats below which a row-wise op stays on the calling thread (waking the others would cost
/// more than it saves).
const PAR_MIN: usize = 16 * 1024;

/// Run `f(index, row)` over the rows of `width` in `out`, split across the current rayon pool
/// when there is enough work: these ops are memory- and exp-bound, and a single thread running
/// them leaves the other cores idle between the (already parallel) matrix products. The
/// callers dispatch each row through [`pulp::Arch`], so the loops are compiled for the widest
/// vector unit this CPU has (AVX2 or AVX-512) while the binary still runs on any x86-64.
fn for_rows(out: &mut [f32], width: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    use rayon::prelude::*;
    if out.len() < PAR_MIN || rayon::current_num_threads() < 2 {
        out.chunks_exact_mut(width)
            .enumerate()
            .for_each(|(i, row)| f(i, row));
    } else {
        // A few rows per task, so scheduling stays small beside the work.
        let rows_per_task = (PAR_MIN / 4 / width).max(1);
        out.par_chunks_mut(width * rows_per_task)
            .enumerate()
            .for_each(|(t, block)| {
                for (j, row) in block.chunks_exact_mut(width).enumerate() {
                    f(t * rows_per_task + j, row);
                }
            });
    }
}

/// Eight partial sums, so the loop vectorises without reassociating floats behind our back.
#[inline(always)]
fn sum(xs: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = xs.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, x) in acc.iter_mut().zip(c) {
            *a += x;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// LayerNorm of one row in place.
#[inline(always)]
fn layer_norm_row(row: &mut [f32], norm: &Norm, eps: f32) {
    let n = row.len() as f32;
    let mean = sum(row) / n;
    row.iter_mut().for_each(|x| *x -= mean);
    let mut sq = [0f32; 8];
    let chunks = row.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().map(|x| x * x).sum();
    for c in chunks {
        for (a, x) in sq.iter_mut().zip(c) {
            *a += x * x;
        }
    }
    let var = (sq.iter().sum::<f32>() + tail) / n;
    let inv = 1.0 / (var + eps).sqrt();
    for ((x, g), b) in row.iter_mut().zip(&norm.gamma.v).zip(&norm.beta.v) {
        *x = *x * inv * g + b;
    }
}

/// `x + bias`, then GELU or not, row by row.
struct RowOp<'a> {
    bias: &'a [f32],
    gelu: bool,
}

impl CustomOp1 for RowOp<'_> {
    fn name(&self) -> &'static str {
        "bias-row"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let xs = f32s(s, l, self.name())?;
        let width = self.bias.len();
        rows(xs.len(), width, self.name())?;
        let mut out = xs.to_vec();
        let (arch, bias) = (pulp::Arch::new(), self.bias);
        if self.gelu {
            for_rows(&mut out, width, |_, row| {
                arch.dispatch(Row::Gelu { row, bias })
            });
        } else {
            for_rows(&mut out, width, |_, row| {
                arch.dispatch(Row::Bias { row, bias });
            });
        }
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
}

/// `LayerNorm(y + bias + residual)`, row by row.
struct AddNorm<'a> {
    bias: &'a [f32],
    norm: &'a Norm,
    eps: f32,
}

impl CustomOp2 for AddNorm<'_> {
    fn name(&self) -> &'static str {
        "add-norm"
    }

    fn cpu_fwd(
        &self,
        ys: &CpuStorage,
        yl: &Layout,
        rs: &CpuStorage,
        rl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (ys, rs) = (f32s(ys, yl, self.name())?, f32s(rs, rl, self.name())?);
        let width = self.bias.len();
        rows(ys.len(), width, self.name())?;
        if rs.len() != ys.len() || self.norm.gamma.v.len() != width {
            candle_core::bail!("add-norm: mismatched sizes");
        }
        let mut out = ys.to_vec();
        let arch = pulp::Arch::new();
        for_rows(&mut out, width, |i, row| {
            let res = &rs[i * width..][..width];
            arch.dispatch(Row::AddNorm {
                row,
                bias: self.bias,
                residual: res,
                norm: self.norm,
                eps: self.eps,
            });
        });
        Ok((CpuStorage::F32(out), yl.shape().clone()))
    }
}

/// `LayerNorm(word + position + token type)` for `(batch * tokens, hidden)` word rows and
/// `(tokens, hidden)` position rows.
struct EmbedNorm<'a> {
    tokens: usize,
    type0: &'a [f32],
    norm: &'a Norm,
    eps: f32,
}

impl CustomOp2 for EmbedNorm<'_> {
    fn name(&self) -> &'static str {
        "embed-norm"
    }

    fn cpu_fwd(
        &self,
        ws: &CpuStorage,
        wl: &Layout,
        ps: &CpuStorage,
        pl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (ws, ps) = (f32s(ws, wl, self.name())?, f32s(ps, pl, self.name())?);
        let width = self.type0.len();
        rows(ws.len(), width * self.tokens, self.name())?;
        if ps.len() != width * self.tokens {
            candle_core::bail!("embed-norm: mismatched sizes");
        }
        let mut out = ws.to_vec();
        for (i, row) in out.chunks_exact_mut(width).enumerate() {
            let pos = &ps[(i % self.tokens) * width..][..width];
            for ((x, p), t) in row.iter_mut().zip(pos).zip(self.type0) {
                *x += p + t;
            }
            layer_norm_row(row, self.norm, self.eps);
        }
        Ok((CpuStorage::F32(out), wl.shape().clone()))
    }
}

/// Softmax over the last dimension of `(batch, heads, queries, keys)` with padding keys left out.
struct MaskedSoftmax;

impl CustomOp2 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "masked-softmax"
    }

    fn cpu_fwd(
        &self,
        ss: &CpuStorage,
        sl: &Layout,
        ms: &CpuStorage,
        ml: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (ss, ms) = (f32s(ss, sl, self.name())?, f32s(ms, ml, self.name())?);
        let (b, heads, queries, keys) = sl.shape().dims4()?;
        if ms.len() != b * keys {
            candle_core::bail!("masked-softmax: a mask of {} for {b}x{keys}", ms.len());
        }
        let mut out = ss.to_vec();
        let arch = pulp::Arch::new();
        for_rows(&mut out, keys, |i, row| {
            let mask = &ms[(i / (heads * queries)) * keys..][..keys];
            arch.dispatch(Row::Softmax { row, mask });
        });
        Ok((CpuStorage::F32(out), sl.shape().clone()))
    }
}

/// One row's work, run through [`pulp::Arch::dispatch`]. A struct rather than a closure: its
/// `with_simd` and the row functions are all `inline(always)`, so the loops are compiled inside
/// pulp's AVX2 / AVX-512 entry points (a closure body may be left out of line, at baseline SSE).
enum Row<'a> {
    Bias {
        row: &'a mut [f32],
        bias: &'a [f32],
    },
    Gelu {
        row: &'a mut [f32],
        bias: &'a [f32],
    },
    AddNorm {
        row: &'a mut [f32],
        bias: &'a [f32],
        residual: &'a [f32],
        norm: &'a Norm,
        eps: f32,
    },
    Softmax {
        row: &'a mut [f32],
        mask: &'a [f32],
    },
}

impl pulp::WithSimd for Row<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        match self {
            Self::Bias { row, bias } => row.iter_mut().zip(bias).for_each(|(x, b)| *x += b),
            Self::Gelu { row, bias } => gelu_row(row, bias),
            Self::AddNorm {
                row,
                bias,
                residual,
                norm,
                eps,
            } => add_norm_row(row, bias, residual, norm, eps),
            Self::Softmax { row, mask } => softmax_row(row, mask),
        }
    }
}

/// Softmax of one row of scores, keys with mask 0 weighted 0.
#[inline(always)]
fn softmax_row(row: &mut [f32], mask: &[f32]) {
    // Branch-free, so both loops vectorise: padding keys count as -inf for the
    // maximum and are multiplied by their mask (0) after the exponential.
    let mut lanes = [f32::NEG_INFINITY; 8];
    let (rc, mc) = (row.chunks_exact(8), mask.chunks_exact(8));
    let mut max = rc
        .remainder()
        .iter()
        .zip(mc.remainder())
        .fold(f32::NEG_INFINITY, |a, (x, m)| {
            a.max(if *m != 0.0 { *x } else { f32::NEG_INFINITY })
        });
    for (r, m) in rc.zip(mc) {
        for ((l, x), m) in lanes.iter_mut().zip(r).zip(m) {
            *l = l.max(if *m != 0.0 { *x } else { f32::NEG_INFINITY });
        }
    }
    max = lanes.iter().fold(max, |a, l| a.max(*l));
    for (x, m) in row.iter_mut().zip(mask) {
        *x = exp_nonpositive((*x - max).min(0.0)) * m;
    }
    let total = sum(row);
    if total > 0.0 {
        let inv = 1.0 / total;
        row.iter_mut().for_each(|x| *x *= inv);
    }
}

/// `gelu(x + bias)` of one row in place.
#[inline(always)]
fn gelu_row(row: &mut [f32], bias: &[f32]) {
    for (x, b) in row.iter_mut().zip(bias) {
        *x = gelu(*x + b);
    }
}

/// `LayerNorm(x + bias + residual)` of one row in place.
#[inline(always)]
fn add_norm_row(row: &mut [f32], bias: &[f32], residual: &[f32], norm: &Norm, eps: f32) {
    for ((x, b), r) in row.iter_mut().zip(bias).zip(residual) {
        *x += b + r;
    }
    layer_norm_row(row, norm, eps);
}

/// `e^x` for `x <= 0`, branch-free so loops over it vectorise (relative error < 2e-7).
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    let x = x.max(-87.0);
    let k = x * std::f32::consts::LOG2_E + MAGIC;
    let n = k - MAGIC;
    // x - n ln2, with ln2 split so the product stays exact.
    let r = x - n * 0.693_145_75 - n * 1.428_606_8e-6;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (0.166_666_67
                    + r * (0.041_666_41 + r * (0.008_333_452 + r * 0.001_394_432_7)))));
    let bits = (k.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    p * f32::from_bits((bits.wrapping_add(127) << 23) as u32)
}

/// `0.5 x (1 + erf(x / sqrt 2))`, erf by Abramowitz and Stegun 7.1.26 (absolute error < 1.5e-7).
#[inline(always)]
fn gelu(x: f32) -> f32 {
    let z = x * std::f32::consts::FRAC_1_SQRT_2;
    let a = z.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152 + t * 1.061_405_4))));
    let erf = (1.0 - poly * exp_nonpositive(-a * a)).copysign(z);
    0.5 * x * (1.0 + erf)
}

/// Mean over real tokens of `(batch, tokens, hidden)` states, then unit length, one vector per
/// input.
pub fn mean_pool_normalised(hidden: &Tensor, mask: &Tensor) -> candle_core::Result<Vec<Vec<f32>>> {
    let (b, t, h) = hidden.dims3()?;
    let states = hidden.flatten_all()?.to_vec1::<f32>()?;
    let mask = mask.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    if mask.len() != b * t {
        candle_core::bail!("a mask of {} for {b}x{t} tokens", mask.len());
    }
    let mut out = Vec::with_capacity(b);
    for (seq, m) in states.chunks_exact(t * h).zip(mask.chunks_exact(t)) {
        let mut v = vec![0f32; h];
        for (tok, _) in seq.chunks_exact(h).zip(m).filter(|(_, m)| **m != 0.0) {
            v.iter_mut().zip(tok).for_each(|(a, x)| *a += x);
        }
        let count = m.iter().filter(|m| **m != 0.0).count().max(1) as f32;
        v.iter_mut().for_each(|a| *a /= count);
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|a| *a /= norm);
        }
        out.push(v);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn erf_reference(x: f64) -> f64 {
        // Maclaurin series, exact to f64 precision for |x| < 3.
        let mut sum = 0.0;
        let mut term = x;
        for n in 0..200 {
            sum += term / (2 * n + 1) as f64;
            term *= -x * x / (n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn other_activations_are_refused_not_miscomputed() {
        let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
        let config = Config {
            hidden_act: HiddenAct::Relu,
            ..Config::default()
        };
        let err = Bert::load(vb, &config).err().unwrap().to_string();
        assert!(err.contains("only exact GELU"), "{err}");
    }

    #[test]
    fn exp_matches_std() {
        for i in 0..=8700 {
            let x = -(i as f32) / 100.0;
            let (ours, std) = (exp_nonpositive(x), x.exp());
            assert!(
                (ours - std).abs() <= 4e-7 * std + f32::MIN_POSITIVE,
                "exp({x}) = {ours}, std says {std}"
            );
        }
    }

    #[test]
    fn gelu_matches_erf_gelu() {
        // Within |x| < 4.2 the series reference is exact; beyond, GELU is x or 0 within 1e-5.
        for i in -420..=420 {
            let x = i as f32 / 100.0;
            let z = f64::from(x) / std::f64::consts::SQRT_2;
            let erf = if z.abs() < 3.0 {
                erf_reference(z)
            } else {
                z.signum()
            };
            let want = 0.5 * f64::from(x) * (1.0 + erf);
            let got = f64::from(gelu(x));
            assert!((got - want).abs() < 2e-6, "gelu({x}) = {got}, want {want}");
        }
        assert_eq!(gelu(-200.0), 0.0);
        assert_eq!(gelu(200.0), 200.0);
    }
}
