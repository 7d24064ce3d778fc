//! Turns a stack's addresses into (module, file offset) with the memory maps seen while the
//! target was alive, and reads each module's build ID once. Keeping the maps (and a handle on
//! each module file for --bundle-symbols) lets stacks found after the target exited still be
//! normalized, and binaries replaced on disk mid-run still be identified.
use std::collections::HashMap;
use std::fs::File;

use leak_format::{Frame, MapEntry, Module};

use crate::discover;
use crate::procfs;

/// Modules seen so far and the maps that locate them.
#[derive(Debug)]
pub struct ModuleTable {
    pid: u32,
    maps: Vec<MapEntry>,
    /// The module id of each of `maps`, once a frame fell in it.
    map_ids: Vec<Option<u32>>,
    retired: Vec<MapEntry>,
    ids: HashMap<(String, u64, String), u32>,
    modules: Vec<Module>,
    fresh: Vec<Module>,
    keep_files: bool,
    files: HashMap<u32, File>,
}

impl ModuleTable {
    pub fn new(pid: u32, keep_files: bool) -> Self {
        ModuleTable {
            pid,
            maps: Vec::new(),
            map_ids: Vec::new(),
            retired: Vec::new(),
            ids: HashMap::new(),
            modules: Vec::new(),
            fresh: Vec::new(),
            keep_files,
            files: HashMap::new(),
        }
    }

    /// The thread of the process through which its files are opened from now on (one that
    /// runs: a main thread that has ended has no memory map to open them through).
    pub fn set_pid(&mut self, tid: u32) {
        self.pid = tid;
    }

    /// Replaces the current maps; mappings that went away are kept as a fallback for stacks
    /// captured before they did.
    pub fn set_maps(&mut self, mut maps: Vec<MapEntry>) {
        maps.sort_by_key(|m| m.start);
        let old = std::mem::replace(&mut self.maps, maps);
        self.map_ids = vec![None; self.maps.len()];
        for m in old {
            if !self.maps.contains(&m) && !self.retired.contains(&m) {
                self.retired.push(m);
            }
        }
    }

    /// The mapping holding `addr`: an index into the current maps, else a retired one.
    fn find(&self, addr: u64) -> Option<(Option<usize>, &MapEntry)> {
        let i = self.maps.partition_point(|m| m.start <= addr);
        if i > 0 && addr < self.maps[i - 1].end {
            return Some((Some(i - 1), &self.maps[i - 1]));
        }
        self.retired
            .iter()
            .find(|m| m.start <= addr && addr < m.end)
            .map(|m| (None, m))
    }

    /// Frames for a stack's return addresses.
    pub fn normalize(&mut self, ips: &[u64]) -> Vec<Frame> {
        ips.iter().map(|&addr| self.frame(addr)).collect()
    }

    /// The frame of address `addr`: its module and file offset when a file is mapped there.
    fn frame(&mut self, addr: u64) -> Frame {
        let unknown = unlocated(addr);
        let Some((index, m)) = self.find(addr) else {
            return unknown;
        };
        if !m.path.starts_with('/') || m.inode == 0 {
            return unknown;
        }
        let offset = addr - m.start + m.offset;
        let module = match index.and_then(|i| self.map_ids[i]) {
            Some(id) => id,
            None => {
                let m = m.clone();
                let id = self.module_id(&m);
                if let Some(i) = index {
                    self.map_ids[i] = Some(id);
                }
                id
            }
        };
        Frame {
            addr,
            module: Some(module),
            offset,
        }
    }

    fn module_id(&mut self, m: &MapEntry) -> u32 {
        let key = (m.dev.clone(), m.inode, m.path.clone());
        if let Some(&id) = self.ids.get(&key) {
            return id;
        }
        let id = self.modules.len() as u32 + 1;
        let mut module = Module {
            id,
            path: procfs::mapped_path(m).to_string(),
            build_id: None,
            file_size: 0,
        };
        if let Some((path, file)) = procfs::open_mapped(self.pid, m) {
            module.file_size = file.metadata().map_or(0, |md| md.len());
            module.build_id = discover::build_id(&path);
            if self.keep_files {
                self.files.insert(id, file);
            }
        }
        self.ids.insert(key, id);
        self.modules.push(module.clone());
        self.fresh.push(module);
        id
    }

    /// Modules first referenced since the last call.
    pub fn take_new(&mut self) -> Vec<Module> {
        std::mem::take(&mut self.fresh)
    }

    /// Every module with its open file (for --bundle-symbols).
    pub fn files(&mut self) -> Vec<(Module, File)> {
        let mut files = std::mem::take(&mut self.files);
        self.modules
            .iter()
            .filter_map(|m| files.remove(&m.id).map(|f| (m.clone(), f)))
            .collect()
    }
}

/// The frame of `addr` in no module: no mapping known holds it, or no map of its program was
/// read.
pub fn unlocated(addr: u64) -> Frame {
    Frame {
        addr,
        module: None,
        offset: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(start: u64, end: u64, offset: u64, path: &str) -> MapEntry {
        MapEntry {
            start,
            end,
            perms: "r-xp".into(),
            offset,
            dev: "00:01".into(),
            inode: if path.starts_with('/') { 7 } else { 0 },
            path: path.into(),
        }
    }

    #[test]
    fn addresses_become_file_offsets_and_retired_maps_still_resolve() {
        let mut t = ModuleTable::new(std::process::id(), false);
        t.set_maps(vec![
            map(0x2000, 0x3000, 0x1000, "/nonexistent/libx.so"),
            map(0x1000, 0x2000, 0, "/nonexistent/app"),
            map(0x5000, 0x6000, 0, "[heap]"),
        ]);
        let f = t.normalize(&[0x1010, 0x2020, 0x5000, 0x9000]);
        assert_eq!((f[0].module, f[0].offset), (Some(1), 0x10));
        assert_eq!((f[1].module, f[1].offset), (Some(2), 0x1020));
        assert_eq!(f[2].module, None);
        assert_eq!(f[3].module, None);
        assert_eq!(t.take_new().len(), 2);
        // libx.so is unmapped; a stack captured before that still resolves.
        t.set_maps(vec![map(0x1000, 0x2000, 0, "/nonexistent/app")]);
        let f = t.normalize(&[0x2020]);
        assert_eq!((f[0].module, f[0].offset), (Some(2), 0x1020));
        assert!(
            t.take_new().is_empty(),
            "known modules are not announced twice"
        );
    }
}
