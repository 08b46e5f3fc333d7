//! What a push sends: bundles of small files (one tar each), chunks of
//! large ones and the frames that carry them.

use std::collections::HashSet;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;

use super::checksum::{cksum_bytes, cksum_file};
use super::state::{Job, Shared};
use super::{Direction, Pair, PART_DIR};

pub(super) fn rel(path: &str) -> &str {
    path.trim_start_matches('/')
}

/// An absolute destination's folder ("/" at the top) and file name.
pub(super) fn folder_and_name(dst: &str) -> (&str, &str) {
    match dst.rsplit_once('/') {
        Some(("", base)) => ("/", base),
        Some((dir, base)) => (dir, base),
        None => ("/", dst),
    }
}

/// Build a push bundle into `tar_buf` (cleared, its capacity kept). Each
/// file travels as `DIR/.offload-part.SESSION-ID/NAME` and is moved to
/// `DIR/NAME` once the bundle checks out. The bundle carries its own lists
/// for the agent, in its temporary folder `remote_tmp/b.ID/`: `D` (staging
/// and destination folders) before the files, so that a bundle cut short
/// can still be cleared away; `P` (staged paths) and `M` (checksums) after
/// them. Each file is read straight into the bundle and checksummed there.
fn push_bundle(
    shared: &Shared,
    id: u64,
    files: &[usize],
    remote_tmp: &str,
    tar_buf: Vec<u8>,
) -> anyhow::Result<Vec<u8>> {
    // Each file's staged name, and each staging folder with its destination.
    let mut staged = Vec::with_capacity(files.len());
    let mut folders = String::new();
    let mut seen = HashSet::new();
    for &f in files {
        let (dir, base) = folder_and_name(&shared.pairs[f].dst);
        let stage = format!(
            "{}/{PART_DIR}{}-{id}",
            dir.trim_end_matches('/'),
            shared.session
        );
        staged.push(format!("{stage}/{base}"));
        if seen.insert(stage.clone()) {
            folders.push_str(&format!("{stage}\t{dir}\n"));
        }
    }
    let meta = format!("{}/b.{id}", remote_tmp.trim_end_matches('/'));
    let mut tar_buf = tar_buf;
    tar_buf.clear();
    let mut tar = tar::Builder::new(tar_buf);
    let list = |tar: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o600);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, rel(&format!("{meta}/{name}")), data)
    };
    list(&mut tar, "D", folders.as_bytes())?;
    let mut manifest = String::new();
    let mut paths = Vec::new();
    for (&f, name) in files.iter().zip(&staged) {
        let p = &shared.pairs[f];
        let cannot = || format!("cannot read {}", p.src);
        let file = File::open(&p.src).with_context(cannot)?;
        let meta = file.metadata().with_context(cannot)?;
        let size = meta.len();
        let mut h = tar::Header::new_gnu();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        if let Ok(t) = meta.modified() {
            let since = t.duration_since(std::time::UNIX_EPOCH);
            h.set_mtime(since.unwrap_or_default().as_secs());
        }
        // The header (and a long name's) from the tar crate; the data read
        // straight into the bundle after it, where it is checksummed.
        tar.append_data(&mut h, rel(name), std::io::empty())
            .with_context(|| format!("cannot pack {}", p.src))?;
        let buf = tar.get_mut();
        let at = buf.len();
        let got = (&file).take(size).read_to_end(buf).with_context(cannot)?;
        if got as u64 != size {
            buf.truncate(at);
            anyhow::bail!(
                "{} changed while being read ({size} bytes expected, {got} read)",
                p.src
            );
        }
        let sum = cksum_bytes(&buf[at..]);
        buf.resize(at + size.div_ceil(512) as usize * 512, 0);
        manifest.push_str(&format!("{sum} {name}\n"));
        paths.extend_from_slice(name.as_bytes());
        paths.push(0);
    }
    list(&mut tar, "P", &paths)?;
    list(&mut tar, "M", manifest.as_bytes())?;
    // Whole tar records: GNU tar on the far side reads the bundle straight
    // from the channel (`-B -b 20`) and stops at the record holding the
    // end-of-archive blocks, with no copy through `head -c`.
    let mut payload = tar.into_inner()?;
    let pad = (TAR_RECORD - payload.len() % TAR_RECORD) % TAR_RECORD;
    payload.resize(payload.len() + pad, 0);
    Ok(payload)
}

/// GNU tar's default record: 20 blocks of 512 bytes.
const TAR_RECORD: usize = 20 * 512;

fn compress(data: &[u8]) -> anyhow::Result<Vec<u8>> {
    Ok(zstd::bulk::compress(data, 1)?)
}

/// Decide from a sample whether zstd could pay: its ratio, and the speed
/// of compression on this machine.
pub(super) fn sample_compression(pairs: &[Pair], dir: Direction) -> Option<(f64, f64)> {
    if dir != Direction::Push {
        return None;
    }
    let mut raw = 0usize;
    let mut packed = 0usize;
    let t = Instant::now();
    let step = (pairs.len() / 16).max(1);
    for p in pairs.iter().step_by(step).take(16) {
        let mut f = File::open(&p.src).ok()?;
        let mut buf = vec![0u8; 256 << 10];
        let n = f.read(&mut buf).ok()?;
        buf.truncate(n);
        raw += n;
        packed += zstd::bulk::compress(&buf, 1).ok()?.len();
    }
    if raw == 0 {
        return None;
    }
    let secs = t.elapsed().as_secs_f64().max(1e-6);
    Some((packed as f64 / raw as f64, raw as f64 / secs / 1e6))
}

/// A frame to send: its head (request line and lists) and its payload.
pub(super) struct Frame {
    pub(super) head: Vec<u8>,
    pub(super) body: Vec<u8>,
}

/// Buffers a channel's frame builder reuses, so big payloads are not
/// allocated (and faulted in) again for every bundle.
#[derive(Default)]
pub(super) struct Buffers {
    pub(super) bodies: Vec<Vec<u8>>,
}

pub(super) fn build_push_frame(
    shared: &Shared,
    job: &Job,
    remote_zstd: bool,
    remote_tmp: &str,
    bufs: &mut Buffers,
) -> anyhow::Result<Frame> {
    let want_z = remote_zstd && {
        let g = shared.lock();
        g.compress_now
    };
    let body = bufs
        .bodies
        .pop()
        .unwrap_or_else(|| Vec::with_capacity(shared.opts.bundle_bytes as usize + (1 << 20)));
    match job {
        Job::Bundle { id, files } => {
            let mut payload = push_bundle(shared, *id, files, remote_tmp, body)?;
            let mut z = 0;
            if want_z {
                let packed = compress(&payload)?;
                bufs.bodies.push(std::mem::replace(&mut payload, packed));
                z = 1;
                shared.lock().compressed += 1;
            }
            Ok(Frame {
                head: format!("P {id} {} {z}\n", payload.len()).into_bytes(),
                body: payload,
            })
        }
        Job::Chunk {
            id,
            file,
            offset,
            len,
        } => {
            let p = &shared.pairs[*file];
            let f = File::open(&p.src).with_context(|| format!("cannot read {}", p.src))?;
            // Read straight into the buffer's spare room: no zeroing first.
            let mut buf = body;
            buf.clear();
            let got = std::io::Seek::seek(&mut &f, std::io::SeekFrom::Start(*offset))
                .and_then(|_| (&f).take(*len).read_to_end(&mut buf))
                .with_context(|| format!("cannot read {}", p.src))?;
            if got as u64 != *len {
                anyhow::bail!("{} is shorter than when the transfer began", p.src);
            }
            let mut z = 0;
            if want_z {
                let packed = compress(&buf)?;
                bufs.bodies.push(std::mem::replace(&mut buf, packed));
                z = 1;
                shared.lock().compressed += 1;
            }
            let head = format!("C {id} {offset} {} {z}\n{}\n", buf.len(), p.dst).into_bytes();
            Ok(Frame { head, body: buf })
        }
        Job::Finish { id, file } => {
            bufs.bodies.push(body);
            let p = &shared.pairs[*file];
            let sum =
                cksum_file(Path::new(&p.src)).with_context(|| format!("cannot read {}", p.src))?;
            let crc = sum.split(' ').next().unwrap_or("");
            let size = shared.lock().files[*file].size;
            Ok(Frame {
                head: format!("F {id} {size} {crc} 0\n{}\n", p.dst).into_bytes(),
                body: Vec::new(),
            })
        }
    }
}
