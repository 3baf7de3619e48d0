//! The log's Merkle tree: RFC 6962 (Certificate Transparency) hashing over SHA-256, with
//! inclusion and consistency proofs and their verification (the algorithms of RFC 9162,
//! section 2.1). A leaf hashes as `SHA-256(0x00 || leaf)`, an interior node as
//! `SHA-256(0x01 || left || right)`, the empty tree as `SHA-256("")`; a tree of `n > 1` leaves
//! splits at the largest power of two below `n`. The RFC's test vectors are the tests below.

use sha2::{Digest as _, Sha256};

/// A SHA-256 hash in the tree.
pub type Hash = [u8; 32];

/// `SHA-256(0x00 || data)`: the hash of a leaf.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// `SHA-256(0x01 || left || right)`: the hash of an interior node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The largest power of two strictly below `n` (`n >= 2`).
fn split(n: usize) -> usize {
    debug_assert!(n >= 2);
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// The root of the tree over `leaves` (leaf hashes, in order): RFC 6962's MTH.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => Sha256::digest([]).into(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The right edge of a tree being appended to, as a Certificate Transparency log keeps it:
/// the roots of the perfect subtrees the leaves so far split into (one per set bit of the
/// size, largest first). Appending a leaf and computing the root are O(log n) and read no
/// earlier leaf; [`Frontier::root`] equals [`root`] over the same leaves.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    nodes: Vec<Hash>,
}

impl Frontier {
    /// The frontier of the empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many leaves it covers.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends the leaf hashing to `leaf` (a [`leaf_hash`]).
    pub fn push(&mut self, leaf: Hash) {
        let mut h = leaf;
        let mut s = self.size;
        // Each trailing 1 bit of the size is a perfect subtree the new one completes.
        while s & 1 == 1 {
            if let Some(left) = self.nodes.pop() {
                h = node_hash(&left, &h);
            }
            s >>= 1;
        }
        self.nodes.push(h);
        self.size += 1;
    }

    /// The root of the tree over the leaves pushed so far (RFC 6962's MTH).
    pub fn root(&self) -> Hash {
        let mut rev = self.nodes.iter().rev();
        let Some(mut r) = rev.next().copied() else {
            return Sha256::digest([]).into();
        };
        for left in rev {
            r = node_hash(left, &r);
        }
        r
    }
}

/// The audit path of leaf `index` in the tree over `leaves` (RFC 6962's PATH); `None` when
/// `index` is out of range.
pub fn inclusion_proof(leaves: &[Hash], index: usize) -> Option<Vec<Hash>> {
    fn path(m: usize, d: &[Hash], out: &mut Vec<Hash>) {
        if d.len() <= 1 {
            return;
        }
        let k = split(d.len());
        if m < k {
            path(m, &d[..k], out);
            out.push(root(&d[k..]));
        } else {
            path(m - k, &d[k..], out);
            out.push(root(&d[..k]));
        }
    }
    if index >= leaves.len() {
        return None;
    }
    let mut out = Vec::new();
    path(index, leaves, &mut out);
    Some(out)
}

/// The consistency proof from the tree's first `m` leaves to all of `leaves` (RFC 6962's
/// PROOF); `None` when `m` is 0 or more than there are leaves (nothing to prove).
pub fn consistency_proof(leaves: &[Hash], m: usize) -> Option<Vec<Hash>> {
    fn sub(m: usize, d: &[Hash], whole: bool, out: &mut Vec<Hash>) {
        let n = d.len();
        if m == n {
            if !whole {
                out.push(root(d));
            }
            return;
        }
        let k = split(n);
        if m <= k {
            sub(m, &d[..k], whole, out);
            out.push(root(&d[k..]));
        } else {
            sub(m - k, &d[k..], false, out);
            out.push(root(&d[..k]));
        }
    }
    if m == 0 || m > leaves.len() {
        return None;
    }
    let mut out = Vec::new();
    sub(m, leaves, true, &mut out);
    Some(out)
}

/// Whether `proof` shows that the leaf hashing to `leaf` is leaf `index` of the tree of
/// `size` leaves whose root is `root` (RFC 9162, 2.1.3.2).
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    snode == 0 && r == *root
}

/// Whether `proof` shows that the tree of `m` leaves with root `root_m` is a prefix of the
/// tree of `n` leaves with root `root_n` (RFC 9162, 2.1.4.2). `m == n` needs an empty proof
/// and equal roots; `m == 0` is a prefix of anything (with an empty proof).
pub fn verify_consistency(m: u64, n: u64, root_m: &Hash, root_n: &Hash, proof: &[Hash]) -> bool {
    if m > n {
        return false;
    }
    if m == n {
        return proof.is_empty() && root_m == root_n;
    }
    if m == 0 {
        return proof.is_empty();
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if m.is_power_of_two() {
        path.push(*root_m);
    }
    path.extend_from_slice(proof);
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    let (mut fnode, mut snode) = (m - 1, n - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    fr == *root_m && sr == *root_n && snode == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Hash {
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len() / 2)
            .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 6962's reference leaves (the Certificate Transparency test data).
    fn leaves() -> Vec<Hash> {
        [
            "",
            "00",
            "10",
            "2021",
            "3031",
            "40414243",
            "5051525354555657",
            "606162636465666768696a6b6c6d6e6f",
        ]
        .iter()
        .map(|s| leaf_hash(&unhex(s)))
        .collect()
    }

    /// The reference roots of the trees of 0..=8 of those leaves.
    const ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    #[test]
    fn the_frontier_root_is_the_full_root_at_every_size() {
        let l = leaves();
        let mut f = Frontier::new();
        assert_eq!(f.root(), h(ROOTS[0]));
        for (n, leaf) in l.iter().enumerate() {
            f.push(*leaf);
            assert_eq!(f.root(), h(ROOTS[n + 1]), "reference tree of {}", n + 1);
        }
        let many: Vec<Hash> = (0..600u32).map(|i| leaf_hash(&i.to_le_bytes())).collect();
        let mut f = Frontier::new();
        for n in 1..=many.len() {
            f.push(many[n - 1]);
            assert_eq!(f.size(), n as u64);
            assert_eq!(f.root(), root(&many[..n]), "tree of {n} leaves");
            assert_eq!(
                f.nodes.len(),
                n.count_ones() as usize,
                "O(log n) nodes at {n}"
            );
        }
    }

    #[test]
    fn roots_are_the_rfc_6962_reference_roots() {
        let l = leaves();
        for n in 0..=8 {
            assert_eq!(root(&l[..n]), h(ROOTS[n]), "tree of {n} leaves");
        }
    }

    #[test]
    fn inclusion_proofs_are_the_reference_paths() {
        let l = leaves();
        let cases: [(usize, usize, &[&str]); 3] = [
            (
                0,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                5,
                8,
                &[
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                3,
                &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
            ),
        ];
        for (index, size, want) in cases {
            let want: Vec<Hash> = want.iter().map(|s| h(s)).collect();
            let proof = inclusion_proof(&l[..size], index).unwrap();
            assert_eq!(proof, want, "leaf {index} of {size}");
            let r = h(ROOTS[size]);
            assert!(verify_inclusion(
                &l[index],
                index as u64,
                size as u64,
                &proof,
                &r
            ));
            // The wrong leaf, index or size does not verify.
            assert!(!verify_inclusion(
                &l[(index + 1) % size],
                index as u64,
                size as u64,
                &proof,
                &r
            ));
            assert!(!verify_inclusion(
                &l[index],
                index as u64 + 1,
                size as u64,
                &proof,
                &r
            ));
            assert!(!verify_inclusion(
                &l[index],
                index as u64,
                size as u64 + 1,
                &proof,
                &r
            ));
        }
    }

    #[test]
    fn consistency_proofs_are_the_reference_proofs() {
        let l = leaves();
        let cases: [(usize, usize, &[&str]); 3] = [
            (
                2,
                8,
                &[
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                6,
                8,
                &[
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                5,
                &[
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
        ];
        for (m, n, want) in cases {
            let want: Vec<Hash> = want.iter().map(|s| h(s)).collect();
            let proof = consistency_proof(&l[..n], m).unwrap();
            assert_eq!(proof, want, "{m} -> {n}");
            let (rm, rn) = (h(ROOTS[m]), h(ROOTS[n]));
            assert!(verify_consistency(m as u64, n as u64, &rm, &rn, &proof));
            assert!(!verify_consistency(m as u64, n as u64, &rn, &rm, &proof));
            assert!(!verify_consistency(
                m as u64,
                n as u64,
                &h(ROOTS[m - 1]),
                &rn,
                &proof
            ));
        }
    }

    #[test]
    fn every_proof_of_every_small_tree_verifies_and_tampering_fails() {
        let many: Vec<Hash> = (0..37u8)
            .map(|i| leaf_hash(&[i, i.wrapping_mul(7)]))
            .collect();
        for n in 1..=many.len() {
            let tree = &many[..n];
            let r = root(tree);
            for i in 0..n {
                let p = inclusion_proof(tree, i).unwrap();
                assert!(
                    verify_inclusion(&tree[i], i as u64, n as u64, &p, &r),
                    "{i} of {n}"
                );
                if let Some(first) = p.first() {
                    let mut bad = p.clone();
                    bad[0] = node_hash(first, first);
                    assert!(!verify_inclusion(&tree[i], i as u64, n as u64, &bad, &r));
                }
            }
            for m in 1..=n {
                let p = consistency_proof(tree, m).unwrap();
                let rm = root(&tree[..m]);
                assert!(
                    verify_consistency(m as u64, n as u64, &rm, &r, &p),
                    "{m} -> {n}"
                );
                if m < n {
                    let mut other = tree.to_vec();
                    other[m - 1] = leaf_hash(b"rewritten");
                    assert!(!verify_consistency(
                        m as u64,
                        n as u64,
                        &root(&other[..m]),
                        &r,
                        &p
                    ));
                }
            }
        }
    }
}
