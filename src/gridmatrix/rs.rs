//! Reed–Solomon over GF(2⁷) as Grid Matrix uses it: primitive polynomial x⁷+x³+1 (0x89),
//! generator ∏(x − αⁱ) for i = 1…e, parity appended highest degree first; decoding corrects
//! errors and erasures together (2·errors + erasures ≤ e).
//!
//! Written here rather than taken from a crate: the Reed–Solomon crates work over GF(2⁸) (or
//! GF(2¹⁶)) only, and rxing's generic decoder, which takes other fields, corrects errors but
//! not erasures — and a macromodule whose frame reads wrong is the erasure hint this symbology
//! gives a reader.

/// Field size.
const Q: usize = 128;
/// x⁷ + x³ + 1.
const PRIMITIVE: u16 = 0x89;

/// Exponent and logarithm tables of GF(2⁷) with α = x.
struct Field {
    exp: [u8; 2 * Q],
    log: [u8; Q],
}

const fn field() -> Field {
    let mut exp = [0u8; 2 * Q];
    let mut log = [0u8; Q];
    let mut x: u16 = 1;
    let mut i = 0;
    while i < Q - 1 {
        exp[i] = x as u8;
        exp[i + Q - 1] = x as u8;
        log[x as usize] = i as u8;
        x <<= 1;
        if x & 0x80 != 0 {
            x ^= PRIMITIVE;
        }
        i += 1;
    }
    Field { exp, log }
}

static GF: Field = field();

fn mul(a: u8, b: u8) -> u8 {
    if a == 0 || b == 0 {
        0
    } else {
        GF.exp[GF.log[a as usize] as usize + GF.log[b as usize] as usize]
    }
}

fn inv(a: u8) -> u8 {
    debug_assert!(a != 0);
    GF.exp[(Q - 1 - GF.log[a as usize] as usize) % (Q - 1)]
}

/// αⁿ.
fn alpha(n: usize) -> u8 {
    GF.exp[n % (Q - 1)]
}

/// p(x) at x, coefficients lowest degree first.
fn eval_low_first(p: &[u8], x: u8) -> u8 {
    p.iter().rev().fold(0, |acc, &c| mul(acc, x) ^ c)
}

/// The generator ∏_{i=1..e} (x − αⁱ), coefficients highest degree first (leading 1).
fn generator(e: usize) -> Vec<u8> {
    let mut g = vec![1u8];
    for i in 1..=e {
        let root = alpha(i);
        let mut next = vec![0u8; g.len() + 1];
        for (j, &c) in g.iter().enumerate() {
            next[j] ^= c;
            next[j + 1] ^= mul(c, root);
        }
        g = next;
    }
    g
}

/// The `e` parity codewords of `data` (7-bit values), highest degree first: appended to the
/// data they make a codeword divisible by the generator.
pub fn parity(data: &[u8], e: usize) -> Vec<u8> {
    let g = generator(e);
    let mut rem = vec![0u8; e];
    for &d in data {
        let factor = d ^ rem[0];
        rem.rotate_left(1);
        rem[e - 1] = 0;
        if factor != 0 {
            for (r, &gc) in rem.iter_mut().zip(&g[1..]) {
                *r ^= mul(gc, factor);
            }
        }
    }
    rem
}

/// Why a block could not be corrected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RsError {
    #[error("more erasures than parity codewords")]
    TooManyErasures,
    #[error("the block holds more errors than its parity corrects")]
    Uncorrectable,
    #[error("a codeword is not a 7-bit value")]
    NotSevenBit,
}

/// Corrects `block` (data then `e` parity codewords) in place, given the positions (indexes
/// into `block`) known to be unreliable; returns how many codewords were changed.
pub fn correct(block: &mut [u8], e: usize, erasures: &[usize]) -> Result<usize, RsError> {
    let n = block.len();
    if block.iter().any(|&c| c >= Q as u8) {
        return Err(RsError::NotSevenBit);
    }
    if e == 0 || n > Q - 1 {
        return if e == 0 {
            Ok(0)
        } else {
            Err(RsError::Uncorrectable)
        };
    }
    let mut erasures: Vec<usize> = erasures.iter().copied().filter(|&p| p < n).collect();
    erasures.sort_unstable();
    erasures.dedup();
    if erasures.len() > e {
        return Err(RsError::TooManyErasures);
    }
    // Position j carries x^(n-1-j): its locator is α^(n-1-j).
    let locator = |j: usize| alpha(n - 1 - j);
    // Syndromes S_i = c(αⁱ), i = 1..e (stored s[i-1]).
    let syndromes: Vec<u8> = (1..=e)
        .map(|i| {
            let x = alpha(i);
            block.iter().fold(0u8, |acc, &c| mul(acc, x) ^ c)
        })
        .collect();
    if syndromes.iter().all(|&s| s == 0) {
        return Ok(0);
    }
    // Erasure locator Γ(x) = ∏ (1 − X_k x), lowest degree first.
    let mut lambda = vec![1u8];
    for &p in &erasures {
        let x = locator(p);
        let mut next = vec![0u8; lambda.len() + 1];
        for (i, &c) in lambda.iter().enumerate() {
            next[i] ^= c;
            next[i + 1] ^= mul(c, x);
        }
        lambda = next;
    }
    // Berlekamp–Massey started from the erasure locator (errors-and-erasures decoding).
    let rho = erasures.len();
    let mut b = lambda.clone();
    let mut l = rho;
    for r in (rho + 1)..=e {
        let mut delta = 0u8;
        for (j, &lj) in lambda.iter().enumerate() {
            if j < r {
                delta ^= mul(lj, syndromes[r - 1 - j]);
            }
        }
        // B ← x·B in both branches below (before or after use).
        let mut xb = vec![0u8; b.len() + 1];
        xb[1..].copy_from_slice(&b);
        if delta == 0 {
            b = xb;
            continue;
        }
        let mut t = lambda.clone();
        if t.len() < xb.len() {
            t.resize(xb.len(), 0);
        }
        for (ti, &bi) in t.iter_mut().zip(&xb) {
            *ti ^= mul(delta, bi);
        }
        if 2 * l < r + rho {
            let dinv = inv(delta);
            b = lambda.iter().map(|&c| mul(c, dinv)).collect();
            l = r + rho - l;
        } else {
            b = xb;
        }
        lambda = t;
    }
    while lambda.len() > 1 && lambda.last() == Some(&0) {
        lambda.pop();
    }
    let degree = lambda.len() - 1;
    if degree != l || 2 * (l - rho) + rho > e {
        return Err(RsError::Uncorrectable);
    }
    // Chien search: the positions j whose X_j⁻¹ is a root.
    let positions: Vec<usize> = (0..n)
        .filter(|&j| eval_low_first(&lambda, inv(locator(j))) == 0)
        .collect();
    if positions.len() != degree {
        return Err(RsError::Uncorrectable);
    }
    // Forney (first consecutive root α¹): Y = Ω(X⁻¹) / Λ'(X⁻¹).
    let mut omega = vec![0u8; e];
    for (i, &s) in syndromes.iter().enumerate() {
        for (j, &lj) in lambda.iter().enumerate() {
            if i + j < e {
                omega[i + j] ^= mul(s, lj);
            }
        }
    }
    let derivative: Vec<u8> = lambda
        .iter()
        .enumerate()
        .skip(1)
        .map(|(i, &c)| if i % 2 == 1 { c } else { 0 })
        .collect();
    let mut changed = 0;
    for &j in &positions {
        let xinv = inv(locator(j));
        let den = eval_low_first(&derivative, xinv);
        if den == 0 {
            return Err(RsError::Uncorrectable);
        }
        let magnitude = mul(eval_low_first(&omega, xinv), inv(den));
        if magnitude != 0 {
            block[j] ^= magnitude;
            changed += 1;
        }
        if block[j] >= Q as u8 {
            return Err(RsError::Uncorrectable);
        }
    }
    // A decoder pushed past its capacity can "correct" into another codeword's neighbourhood:
    // only a block whose syndromes now vanish is accepted.
    let clean = (1..=e).all(|i| {
        let x = alpha(i);
        block.iter().fold(0u8, |acc, &c| mul(acc, x) ^ c) == 0
    });
    if clean {
        Ok(changed)
    } else {
        Err(RsError::Uncorrectable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn codeword(data: &[u8], e: usize) -> Vec<u8> {
        let mut c = data.to_vec();
        c.extend(parity(data, e));
        c
    }

    #[test]
    fn the_field_is_gf128_with_x7_x3_1() {
        // α⁷ = α³ + 1
        assert_eq!(alpha(7), 0b1001);
        assert_eq!(alpha(127), 1);
        for a in 1..128u8 {
            assert_eq!(mul(a, inv(a)), 1);
        }
    }

    #[test]
    fn a_codeword_has_zero_syndromes_and_survives_untouched() {
        let data: Vec<u8> = (0..40).map(|i| (i * 37 % 128) as u8).collect();
        let mut c = codeword(&data, 10);
        assert_eq!(correct(&mut c, 10, &[]), Ok(0));
        assert_eq!(&c[..40], &data[..]);
    }

    proptest! {
        #[test]
        fn up_to_half_e_errors_are_corrected(
            data in proptest::collection::vec(0u8..128, 1..100),
            e in 2usize..26,
            seed in any::<u64>(),
        ) {
            let n = data.len() + e;
            prop_assume!(n <= 127);
            let clean = codeword(&data, e);
            let mut c = clean.clone();
            let mut rng = seed;
            let mut next = || { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; rng };
            let errors = e / 2;
            let mut hit = std::collections::BTreeSet::new();
            while hit.len() < errors {
                hit.insert((next() % n as u64) as usize);
            }
            for &p in &hit {
                c[p] ^= 1 + (next() % 127) as u8;
            }
            prop_assert!(correct(&mut c, e, &[]).is_ok());
            prop_assert_eq!(c, clean);
        }

        #[test]
        fn e_erasures_are_corrected(
            data in proptest::collection::vec(0u8..128, 1..100),
            e in 1usize..26,
            seed in any::<u64>(),
        ) {
            let n = data.len() + e;
            prop_assume!(n <= 127);
            let clean = codeword(&data, e);
            let mut c = clean.clone();
            let mut rng = seed | 1;
            let mut next = || { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; rng };
            let mut erased = std::collections::BTreeSet::new();
            while erased.len() < e {
                erased.insert((next() % n as u64) as usize);
            }
            for &p in &erased {
                c[p] = (next() % 128) as u8;
            }
            let erased: Vec<usize> = erased.into_iter().collect();
            prop_assert!(correct(&mut c, e, &erased).is_ok());
            prop_assert_eq!(c, clean);
        }

        #[test]
        fn errors_and_erasures_mix_within_capacity(
            data in proptest::collection::vec(0u8..128, 1..80),
            e in 4usize..30,
            seed in any::<u64>(),
        ) {
            let n = data.len() + e;
            prop_assume!(n <= 127);
            let clean = codeword(&data, e);
            let mut c = clean.clone();
            let mut rng = seed | 1;
            let mut next = || { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; rng };
            let rho = (next() % (e as u64 + 1)) as usize;
            let errors = (e - rho) / 2;
            let mut touched = std::collections::BTreeSet::new();
            while touched.len() < rho + errors {
                touched.insert((next() % n as u64) as usize);
            }
            let touched: Vec<usize> = touched.into_iter().collect();
            for &p in &touched {
                c[p] ^= 1 + (next() % 127) as u8;
            }
            prop_assert!(correct(&mut c, e, &touched[..rho]).is_ok());
            prop_assert_eq!(c, clean);
        }

        #[test]
        fn beyond_capacity_is_a_clean_failure_or_a_valid_codeword(
            data in proptest::collection::vec(0u8..128, 1..80),
            e in 2usize..20,
            seed in any::<u64>(),
        ) {
            let n = data.len() + e;
            prop_assume!(n <= 127);
            let clean = codeword(&data, e);
            let mut c = clean.clone();
            let mut rng = seed | 1;
            let mut next = || { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; rng };
            let errors = e / 2 + 1 + (next() % 3) as usize;
            let mut hit = std::collections::BTreeSet::new();
            while hit.len() < errors.min(n) {
                hit.insert((next() % n as u64) as usize);
            }
            for &p in &hit {
                c[p] ^= 1 + (next() % 127) as u8;
            }
            // Never a panic; if it "corrects", the result is a codeword (it can be another).
            if correct(&mut c, e, &[]).is_ok() {
                prop_assert!(correct(&mut c.clone(), e, &[]) == Ok(0));
            }
        }
    }

    #[test]
    fn more_erasures_than_parity_is_refused() {
        let mut c = codeword(&[1, 2, 3], 4);
        assert_eq!(
            correct(&mut c, 4, &[0, 1, 2, 3, 4]),
            Err(RsError::TooManyErasures)
        );
        let mut bad = vec![200u8; 7];
        assert_eq!(correct(&mut bad, 4, &[]), Err(RsError::NotSevenBit));
    }
}
