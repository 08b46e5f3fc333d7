//! POSIX `cksum`, as the far side computes it, here.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

/// POSIX `cksum`: CRC-32 (polynomial 0x04C11DB7) over the data and then
/// its length, as every remote system's `cksum` prints it ("CRC SIZE").
/// Transfers check each file's size and this checksum at the destination.
pub struct Cksum {
    digest: crc_fast::Digest,
    len: u64,
}

impl Default for Cksum {
    fn default() -> Cksum {
        Cksum {
            digest: crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Cksum),
            len: 0,
        }
    }
}

impl Cksum {
    pub fn update(&mut self, data: &[u8]) {
        self.digest.update(data);
        self.len += data.len() as u64;
    }

    /// "CRC SIZE", as `cksum` prints it.
    pub fn finish(mut self) -> String {
        let mut n = self.len;
        while n > 0 {
            self.digest.update(&[(n & 0xff) as u8]);
            n >>= 8;
        }
        format!("{} {}", self.digest.finalize() as u32, self.len)
    }
}

pub fn cksum_bytes(data: &[u8]) -> String {
    let mut c = Cksum::default();
    c.update(data);
    c.finish()
}

pub fn cksum_file(path: &Path) -> std::io::Result<String> {
    let mut f = File::open(path)?;
    let mut c = Cksum::default();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        c.update(&buf[..n]);
    }
    Ok(c.finish())
}

/// `cksum` output ("CRC SIZE NAME" lines): name -> "CRC SIZE".
pub(super) fn parse_sums(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ' ');
            let (crc, size, name) = (f.next()?, f.next()?, f.next()?);
            Some((name.to_string(), format!("{crc} {size}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_parse() {
        let m = parse_sums("12738659 1 /x/a\\b `c`.dat\n3537609151 1 /x/sp ace\n");
        assert_eq!(m["/x/a\\b `c`.dat"], "12738659 1");
        assert_eq!(m["/x/sp ace"], "3537609151 1");
    }

    #[test]
    fn cksum_is_posix_cksum() {
        // Values printed by coreutils' cksum.
        assert_eq!(cksum_bytes(b"x"), "12738659 1");
        assert_eq!(cksum_bytes(b"y"), "3537609151 1");
        assert_eq!(cksum_bytes(b""), "4294967295 0");
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let out = std::process::Command::new("cksum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(&data)?;
                c.wait_with_output()
            })
            .unwrap();
        assert_eq!(
            cksum_bytes(&data),
            String::from_utf8(out.stdout).unwrap().trim()
        );
    }
}
