//! Nearest-neighbour search over one partition's question embeddings.
//!
//! Small partitions are searched exactly (a dot product per entry, unit vectors); once one
//! grows past `flat_max` entries it moves to an HNSW graph (the `hnsw_rs` crate). Either is
//! rebuilt from sled on start: sled is the source of truth and these only point into it.

use std::panic::{catch_unwind, AssertUnwindSafe};

use hnsw_rs::anndists::dist::DistCosine;
use hnsw_rs::hnsw::Hnsw;

/// Approximate (or exact) nearest neighbours by cosine similarity of unit vectors.
pub trait AnnIndex: Send {
    /// Add vector `v` under `id`.
    fn insert(&mut self, id: usize, v: &[f32]);
    /// Up to `k` ids with their cosine similarity, most similar first.
    fn search(&self, v: &[f32], k: usize) -> Vec<(usize, f32)>;
    /// Vectors held.
    fn len(&self) -> usize;
    /// Whether it holds nothing.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Which kind, for stats.
    fn kind(&self) -> &'static str;
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Exact search.
#[derive(Default)]
pub struct Flat {
    rows: Vec<(usize, Vec<f32>)>,
}

impl AnnIndex for Flat {
    fn insert(&mut self, id: usize, v: &[f32]) {
        self.rows.push((id, v.to_vec()));
    }

    fn search(&self, v: &[f32], k: usize) -> Vec<(usize, f32)> {
        let mut all: Vec<(usize, f32)> = self.rows.iter().map(|(id, r)| (*id, dot(r, v))).collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1));
        all.truncate(k);
        all
    }

    fn len(&self) -> usize {
        self.rows.len()
    }

    fn kind(&self) -> &'static str {
        "flat"
    }
}

/// HNSW graph (M = 16, ef_construction = 200, ef_search = max(64, 4k)).
pub struct Graph {
    hnsw: Hnsw<'static, f32, DistCosine>,
    len: usize,
}

impl Graph {
    /// An empty graph sized for about `expected` vectors.
    pub fn new(expected: usize) -> Self {
        Self {
            hnsw: Hnsw::new(16, expected.max(1024), 16, 200, DistCosine {}),
            len: 0,
        }
    }
}

impl AnnIndex for Graph {
    // The crate asserts on its inputs (e.g. a zero vector); a bad vector must cost one entry
    // its place in the index, never the cache actor.
    fn insert(&mut self, id: usize, v: &[f32]) {
        if catch_unwind(AssertUnwindSafe(|| self.hnsw.insert((v, id)))).is_ok() {
            self.len += 1;
        }
    }

    fn search(&self, v: &[f32], k: usize) -> Vec<(usize, f32)> {
        // Cosine distance is 1 - cos.
        catch_unwind(AssertUnwindSafe(|| self.hnsw.search(v, k, (4 * k).max(64))))
            .unwrap_or_default()
            .into_iter()
            .map(|n| (n.d_id, 1.0 - n.distance))
            .collect()
    }

    fn len(&self) -> usize {
        self.len
    }

    fn kind(&self) -> &'static str {
        "hnsw"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(seed: u64, dim: usize) -> Vec<f32> {
        let mut x = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let v: Vec<f32> = (0..dim)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((x >> 33) as f32 / (1u64 << 31) as f32) - 0.5
            })
            .collect();
        let n = v.iter().map(|a| a * a).sum::<f32>().sqrt();
        v.into_iter().map(|a| a / n).collect()
    }

    #[test]
    fn the_graph_finds_what_exact_search_finds() {
        let (mut flat, mut graph) = (Flat::default(), Graph::new(2000));
        let vs: Vec<Vec<f32>> = (0..2000).map(|i| unit(i, 64)).collect();
        for (i, v) in vs.iter().enumerate() {
            flat.insert(i, v);
            graph.insert(i, v);
        }
        let mut agree = 0;
        for q in 0..100 {
            let query = &vs[q * 7];
            let (f, g) = (flat.search(query, 1), graph.search(query, 1));
            assert_eq!(f[0].0, q * 7);
            assert!((f[0].1 - 1.0).abs() < 1e-4);
            agree += usize::from(g.first().map(|x| x.0) == Some(q * 7));
        }
        assert!(
            agree >= 98,
            "HNSW found {agree}/100 of the exact neighbours"
        );
    }
}
