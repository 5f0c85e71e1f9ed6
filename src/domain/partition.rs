//! The Kafka partition a meter's records land on, as the producers' partitioner computes it:
//! the store's ownership units (the open-work index) follow the orders topic's partitions, so
//! that the instance that owns a partition can load exactly its meters.

use serde::{Deserialize, Serialize};

/// The keyed partitioners of Kafka clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Partitioner {
    /// librdkafka's default (`consistent_random`, `consistent`): CRC-32 of the key.
    Crc32,
    /// Java clients' default, and librdkafka's `murmur2_random` / `murmur2`.
    Murmur2,
}

impl Partitioner {
    /// The partitioner of a librdkafka `partitioner` property value (`None`: librdkafka's
    /// default). `None` back for the partitioners that do not hash the key alone.
    pub fn of_librdkafka(name: Option<&str>) -> Option<Partitioner> {
        match name.unwrap_or("consistent_random") {
            "consistent_random" | "consistent" => Some(Partitioner::Crc32),
            "murmur2_random" | "murmur2" => Some(Partitioner::Murmur2),
            _ => None,
        }
    }

    /// The partition of `key` among `partitions` (at least 1).
    pub fn partition(self, key: &[u8], partitions: u32) -> u32 {
        let n = partitions.max(1);
        match self {
            Partitioner::Crc32 => crc32(key) % n,
            Partitioner::Murmur2 => (murmur2(key) & 0x7fff_ffff) % n,
        }
    }
}

/// CRC-32 (ISO-HDLC, the zlib one), as librdkafka's `rd_crc32`.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Kafka's murmur2 (seed 0x9747b28c), as the Java client's `Utils.murmur2` and librdkafka's
/// `rd_murmur2`.
fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        // The CRC-32 catalogue's check value for "123456789".
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn murmur2_matches_the_java_clients_test_vectors() {
        // From the Kafka Java client's UtilsTest.testMurmur2 (signed ints there).
        let cases: [(&[u8], i32); 5] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
        ];
        for (key, want) in cases {
            assert_eq!(
                murmur2(key) as i32,
                want,
                "{}",
                String::from_utf8_lossy(key)
            );
        }
    }

    #[test]
    fn librdkafka_partitioner_names_map_to_the_hash_they_use() {
        assert_eq!(Partitioner::of_librdkafka(None), Some(Partitioner::Crc32));
        assert_eq!(
            Partitioner::of_librdkafka(Some("murmur2_random")),
            Some(Partitioner::Murmur2)
        );
        assert_eq!(Partitioner::of_librdkafka(Some("random")), None);
    }
}
