//! Subset choice for a route: a pinning header, else a sticky key, else the weights.
//!
//! Weights are laid out over 10,000 buckets (largest-remainder rounding, in split order), so
//! proportions are exact to 0.01 %. A sticky key hashes to a bucket. Raising one subset's weight
//! at the expense of its neighbour moves the boundary between them, so keys only ever move
//! toward the subset that grew. Unkeyed requests walk the buckets with a per-route counter
//! scrambled by a multiplier coprime to 10,000: every 10,000 consecutive requests cover every
//! bucket exactly once, well interleaved.

use std::sync::atomic::{AtomicU64, Ordering};

/// Buckets in the split.
pub const BUCKETS: u32 = 10_000;
/// Coprime to 10,000 and close to 10,000 / φ, so consecutive requests land far apart.
const STRIDE: u64 = 6_181;

/// A compiled weighted split.
#[derive(Debug)]
pub struct Splitter {
    /// `ends[i]` is one past the last bucket of subset `i`.
    ends: Vec<u32>,
    counter: AtomicU64,
}

impl Splitter {
    /// Lays `weights` (>= 0, not all 0) over the buckets.
    pub fn new(weights: &[u64]) -> Splitter {
        let total: u64 = weights.iter().sum();
        let mut ends = Vec::with_capacity(weights.len());
        if total == 0 {
            ends.resize(weights.len(), 0);
            return Splitter {
                ends,
                counter: AtomicU64::new(0),
            };
        }
        let exact: Vec<u64> = weights.iter().map(|w| w * u64::from(BUCKETS)).collect();
        let mut counts: Vec<u64> = exact.iter().map(|e| e / total).collect();
        let mut left = u64::from(BUCKETS) - counts.iter().sum::<u64>();
        // Hand the leftover buckets to the largest remainders; ties go to the earlier entry.
        let mut order: Vec<usize> = (0..weights.len()).filter(|&i| weights[i] > 0).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(exact[i] % total));
        for &i in order.iter().cycle() {
            if left == 0 {
                break;
            }
            counts[i] += 1;
            left -= 1;
        }
        let mut acc = 0u32;
        for c in counts {
            acc += u32::try_from(c).unwrap_or(BUCKETS);
            ends.push(acc);
        }
        Splitter {
            ends,
            counter: AtomicU64::new(0),
        }
    }

    /// The subset index that owns `bucket`.
    pub fn for_bucket(&self, bucket: u32) -> usize {
        self.ends
            .iter()
            .position(|&end| bucket < end)
            .unwrap_or(self.ends.len().saturating_sub(1))
    }

    /// The next unkeyed request's subset index.
    pub fn next(&self) -> usize {
        let n = self.counter.fetch_add(1, Ordering::Relaxed) % u64::from(BUCKETS);
        let bucket = (n * STRIDE) % u64::from(BUCKETS);
        self.for_bucket(bucket as u32)
    }

    /// The subset index for a sticky key.
    pub fn for_key(&self, key: &[u8]) -> usize {
        self.for_bucket(bucket_of(key))
    }
}

/// The bucket of a sticky key: FNV-1a then a 64-bit finaliser, stable across builds and hosts.
pub fn bucket_of(key: &[u8]) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    (h % u64::from(BUCKETS)) as u32
}

/// The value of cookie `name` in a `Cookie` header, if present.
pub fn cookie_value<'a>(header: &'a [u8], name: &str) -> Option<&'a [u8]> {
    header.split(|&b| b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|&b| b == b'=')?;
        (pair[..eq].trim_ascii() == name.as_bytes()).then(|| pair[eq + 1..].trim_ascii())
    })
}

#[cfg(test)]
mod tests;
