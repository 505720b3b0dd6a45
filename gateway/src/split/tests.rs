use proptest::prelude::*;

use super::*;

fn shares(s: &Splitter, n: usize, subsets: usize) -> Vec<f64> {
    let mut hits = vec![0usize; subsets];
    for _ in 0..n {
        hits[s.next()] += 1;
    }
    hits.iter().map(|&h| h as f64 * 100.0 / n as f64).collect()
}

#[test]
fn named_splits_are_exact_over_10k_requests() {
    for weights in [vec![0, 100], vec![100, 0], vec![1, 99], vec![80, 20]] {
        let s = Splitter::new(&weights);
        let got = shares(&s, 10_000, 2);
        for (g, w) in got.iter().zip(&weights) {
            assert!((g - *w as f64).abs() <= 1.0, "{weights:?} gave {got:?}");
        }
    }
}

#[test]
fn weight_zero_gets_nothing() {
    let s = Splitter::new(&[0, 5, 0]);
    for _ in 0..20_000 {
        assert_eq!(s.next(), 1);
    }
    for k in 0..5_000u32 {
        assert_eq!(s.for_key(&k.to_le_bytes()), 1);
    }
}

#[test]
fn cookie_values_are_found() {
    let h = b"a=1; session=abc ; b=2";
    assert_eq!(cookie_value(h, "session"), Some(&b"abc"[..]));
    assert_eq!(cookie_value(h, "sess"), None);
}

proptest! {
    /// Any weights (not all zero): every 10,000 consecutive requests match the weights to 0.01 pp
    /// after rounding, so within ±1 pp by a wide margin.
    #[test]
    fn proportions_hold_for_any_weights(weights in prop::collection::vec(0u64..1000, 1..6)) {
        prop_assume!(weights.iter().sum::<u64>() > 0);
        let s = Splitter::new(&weights);
        let total: u64 = weights.iter().sum();
        let got = shares(&s, 10_000, weights.len());
        for (g, w) in got.iter().zip(&weights) {
            let want = *w as f64 * 100.0 / total as f64;
            prop_assert!((g - want).abs() <= 0.011, "{:?} gave {:?}", weights, got);
            if *w == 0 { prop_assert!(*g == 0.0); }
        }
    }

    /// Raising the canary (second entry) only moves keys from stable to canary, never back.
    #[test]
    fn sticky_keys_only_move_toward_the_growing_subset(
        from in 0u64..=100, step in 0u64..=100, keys in prop::collection::vec(any::<u64>(), 200)
    ) {
        let to = (from + step).min(100);
        let before = Splitter::new(&[100 - from, from]);
        let after = Splitter::new(&[100 - to, to]);
        for k in keys {
            let k = k.to_le_bytes();
            let (b, a) = (before.for_key(&k), after.for_key(&k));
            prop_assert!(!(b == 1 && a == 0), "key moved from canary back to stable");
        }
    }

    /// The same key always lands in the same bucket, and buckets stay in range.
    #[test]
    fn buckets_are_stable_and_bounded(key in prop::collection::vec(any::<u8>(), 0..64)) {
        let b = bucket_of(&key);
        prop_assert!(b < BUCKETS);
        prop_assert_eq!(b, bucket_of(&key));
    }

    /// Sticky shares follow the weights (hash spread over random keys, so a looser bound).
    #[test]
    fn sticky_shares_follow_weights(canary in 0u64..=100) {
        let s = Splitter::new(&[100 - canary, canary]);
        let n = 20_000u64;
        let hits = (0..n).filter(|k| s.for_key(format!("user-{k}").as_bytes()) == 1).count();
        let got = hits as f64 * 100.0 / n as f64;
        prop_assert!((got - canary as f64).abs() <= 1.5, "canary {} got {}", canary, got);
    }
}
