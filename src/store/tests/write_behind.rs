//! Write-behind: the disk starts writing while data still arrives.

use super::*;
use crate::sys;

/// A transfer of more than WRITE_BEHIND_EVERY bytes onto a real disk runs
/// the write-behind flusher, stops it at commit and still receives every
/// byte; on tmpfs it never starts one.
#[test]
fn write_behind_runs_on_a_disk_and_stops_at_commit() {
    let disk = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    fs::create_dir_all(&disk).unwrap();
    let mut places = vec![(tempfile::tempdir_in(&disk).unwrap(), false)];
    if Path::new("/dev/shm").is_dir() {
        places.push((tempfile::tempdir_in("/dev/shm").unwrap(), true));
    }
    for (tmp, memory) in places {
        let fd = File::open(tmp.path()).unwrap();
        let memory = memory || sys::in_memory_fs(fd.as_fd());
        for entries in [many("big", 40, 256 << 10), many("held", 2, 5 << 20)] {
            let offer = files(entries);
            let store = open(tmp.path());
            let mut t = begin(&store, &offer);
            feed(&mut t, &offer);
            assert_eq!(
                t.behind.is_some(),
                !memory,
                "write-behind on memory fs: {memory}"
            );
            commit(&mut t);
            assert!(t.behind.is_none(), "the flusher outlived the commit");
            assert_received(tmp.path(), &offer);
        }
    }
}
