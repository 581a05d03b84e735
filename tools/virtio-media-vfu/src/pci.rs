// SPDX-License-Identifier: GPL-2.0
//! PCI configuration space of a modern (virtio 1.x) virtio PCI device.
//!
//! Layout:
//! * BAR0: 32-bit memory BAR, `BAR0_SIZE`, not mmapable; handled by the
//!   server: common config, notify, ISR and device config structures.
//! * BAR2: 64-bit prefetchable memory BAR backed by the shared-memory memfd
//!   (offered to QEMU with the mmap flag) = virtio shared memory region 0.
//! * BAR4: 32-bit memory BAR holding the MSI-X table and PBA.
//!
//! Capability list: MSI-X, COMMON, NOTIFY, ISR, DEVICE, SHARED_MEMORY (id 0).
//!
//! Without shared memory (`--no-shm`, `shm_size` 0) BAR2/3 are not
//! implemented (read 0, sizing writes are ignored) and the list ends at
//! DEVICE: there is no SHARED_MEMORY capability.

pub const CONFIG_SIZE: usize = 256;

pub const VIRTIO_PCI_VENDOR: u16 = 0x1af4;
pub const VIRTIO_PCI_DEVICE_BASE: u16 = 0x1040;
pub const VIRTIO_PCI_SUBSYS_DEVICE: u16 = 0x1100;
/// PCI class multimedia (0x04), subclass video (0x00).
pub const PCI_CLASS_MULTIMEDIA_VIDEO: u16 = 0x0400;

pub const PCI_CAP_ID_VNDR: u8 = 0x09;
pub const PCI_CAP_ID_MSIX: u8 = 0x11;

pub const VIRTIO_PCI_CAP_COMMON_CFG: u8 = 1;
pub const VIRTIO_PCI_CAP_NOTIFY_CFG: u8 = 2;
pub const VIRTIO_PCI_CAP_ISR_CFG: u8 = 3;
pub const VIRTIO_PCI_CAP_DEVICE_CFG: u8 = 4;
pub const VIRTIO_PCI_CAP_SHARED_MEMORY_CFG: u8 = 8;

pub const BAR0: u32 = 0;
pub const BAR_SHM: u32 = 2;
pub const BAR_MSIX: u32 = 4;

pub const BAR0_SIZE: u64 = 0x4000;
pub const COMMON_OFF: u64 = 0x0000;
pub const COMMON_LEN: u64 = 0x40;
pub const NOTIFY_OFF: u64 = 0x1000;
pub const NOTIFY_LEN: u64 = 0x1000;
pub const NOTIFY_OFF_MULTIPLIER: u32 = 4;
pub const ISR_OFF: u64 = 0x2000;
pub const ISR_LEN: u64 = 1;
pub const DEVICE_OFF: u64 = 0x3000;
pub const DEVICE_LEN: u64 = 40;

pub const MSIX_BAR_SIZE: u64 = 0x1000;
pub const MSIX_VECTORS: u16 = 4;
pub const MSIX_TABLE_OFF: u32 = 0x0;
pub const MSIX_PBA_OFF: u32 = 0x800;

pub const CAP_MSIX: usize = 0x40;
pub const CAP_COMMON: usize = 0x4c;
pub const CAP_NOTIFY: usize = 0x5c;
pub const CAP_ISR: usize = 0x70;
pub const CAP_DEVICE: usize = 0x80;
pub const CAP_SHM: usize = 0x90;

pub const PCI_COMMAND: usize = 0x04;
pub const PCI_COMMAND_INTX_DISABLE: u16 = 1 << 10;
pub const PCI_STATUS_CAP_LIST: u16 = 1 << 4;
pub const MSIX_CTRL_ENABLE: u16 = 1 << 15;
pub const MSIX_CTRL_MASKALL: u16 = 1 << 14;

pub struct PciConfigSpace {
    bytes: [u8; CONFIG_SIZE],
    /// Bits the driver may change.
    wmask: [u8; CONFIG_SIZE],
}

impl PciConfigSpace {
    /// `shm_size` 0 means no shared-memory region: no BAR2 and no
    /// SHARED_MEMORY capability.
    pub fn new(virtio_device_id: u16, shm_size: u64) -> Self {
        let mut c = PciConfigSpace {
            bytes: [0; CONFIG_SIZE],
            wmask: [0; CONFIG_SIZE],
        };
        c.set16(0x00, VIRTIO_PCI_VENDOR);
        c.set16(0x02, VIRTIO_PCI_DEVICE_BASE.wrapping_add(virtio_device_id));
        // Command: memory space, bus master, INTx disable (+ IO/parity/SERR bits).
        c.set16(PCI_COMMAND, 0);
        c.wmask16(PCI_COMMAND, 0x0547);
        c.set16(0x06, PCI_STATUS_CAP_LIST);
        c.bytes[0x08] = 1; // revision
        c.bytes[0x09] = 0; // prog-if
        c.set16(0x0a, PCI_CLASS_MULTIMEDIA_VIDEO);
        c.bytes[0x0c] = 0; // cache line size
        c.wmask[0x0c] = 0xff;
        c.bytes[0x0d] = 0; // latency timer
        c.bytes[0x0e] = 0; // header type 0
                           // BAR0: 32-bit non-prefetchable memory.
        c.set32(0x10, 0);
        c.wmask32(0x10, !(BAR0_SIZE as u32 - 1) & !0xf);
        // BAR2/3: 64-bit prefetchable memory (all zero and read-only, i.e.
        // not implemented, without shared memory).
        if shm_size > 0 {
            let shm_mask = !(shm_size.next_power_of_two() - 1);
            c.set32(0x18, 0b1100);
            c.wmask32(0x18, (shm_mask as u32) & !0xf);
            c.set32(0x1c, 0);
            c.wmask32(0x1c, (shm_mask >> 32) as u32);
        }
        // BAR4: 32-bit memory, MSI-X table and PBA.
        c.set32(0x20, 0);
        c.wmask32(0x20, !(MSIX_BAR_SIZE as u32 - 1) & !0xf);
        c.set16(0x2c, VIRTIO_PCI_VENDOR);
        c.set16(0x2e, VIRTIO_PCI_SUBSYS_DEVICE);
        c.bytes[0x34] = CAP_MSIX as u8;
        c.bytes[0x3c] = 0xff; // interrupt line, written by firmware
        c.wmask[0x3c] = 0xff;
        c.bytes[0x3d] = 1; // INTA#

        // MSI-X capability.
        c.bytes[CAP_MSIX] = PCI_CAP_ID_MSIX;
        c.bytes[CAP_MSIX + 1] = CAP_COMMON as u8;
        c.set16(CAP_MSIX + 2, MSIX_VECTORS - 1);
        c.wmask16(CAP_MSIX + 2, MSIX_CTRL_ENABLE | MSIX_CTRL_MASKALL);
        c.set32(CAP_MSIX + 4, MSIX_TABLE_OFF | BAR_MSIX);
        c.set32(CAP_MSIX + 8, MSIX_PBA_OFF | BAR_MSIX);

        c.virtio_cap(
            CAP_COMMON,
            CAP_NOTIFY,
            VIRTIO_PCI_CAP_COMMON_CFG,
            COMMON_OFF,
            COMMON_LEN,
            16,
        );
        c.virtio_cap(
            CAP_NOTIFY,
            CAP_ISR,
            VIRTIO_PCI_CAP_NOTIFY_CFG,
            NOTIFY_OFF,
            NOTIFY_LEN,
            20,
        );
        c.set32(CAP_NOTIFY + 16, NOTIFY_OFF_MULTIPLIER);
        c.virtio_cap(
            CAP_ISR,
            CAP_DEVICE,
            VIRTIO_PCI_CAP_ISR_CFG,
            ISR_OFF,
            ISR_LEN,
            16,
        );
        let after_device = if shm_size > 0 { CAP_SHM } else { 0 };
        c.virtio_cap(
            CAP_DEVICE,
            after_device,
            VIRTIO_PCI_CAP_DEVICE_CFG,
            DEVICE_OFF,
            DEVICE_LEN,
            16,
        );
        if shm_size == 0 {
            return c;
        }
        // struct virtio_pci_cap64 for shared memory region id 0 in BAR2.
        c.bytes[CAP_SHM] = PCI_CAP_ID_VNDR;
        c.bytes[CAP_SHM + 1] = 0;
        c.bytes[CAP_SHM + 2] = 24;
        c.bytes[CAP_SHM + 3] = VIRTIO_PCI_CAP_SHARED_MEMORY_CFG;
        c.bytes[CAP_SHM + 4] = BAR_SHM as u8;
        c.bytes[CAP_SHM + 5] = 0; // shmid
        c.set32(CAP_SHM + 8, 0); // offset
        c.set32(CAP_SHM + 12, shm_size as u32); // length
        c.set32(CAP_SHM + 16, 0); // offset_hi
        c.set32(CAP_SHM + 20, (shm_size >> 32) as u32); // length_hi
        c
    }

    fn virtio_cap(
        &mut self,
        at: usize,
        next: usize,
        cfg_type: u8,
        off: u64,
        len: u64,
        cap_len: u8,
    ) {
        self.bytes[at] = PCI_CAP_ID_VNDR;
        self.bytes[at + 1] = next as u8;
        self.bytes[at + 2] = cap_len;
        self.bytes[at + 3] = cfg_type;
        self.bytes[at + 4] = BAR0 as u8;
        self.bytes[at + 5] = 0;
        self.set32(at + 8, off as u32);
        self.set32(at + 12, len as u32);
    }

    fn set16(&mut self, at: usize, v: u16) {
        self.bytes[at..at + 2].copy_from_slice(&v.to_le_bytes());
    }
    fn set32(&mut self, at: usize, v: u32) {
        self.bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn wmask16(&mut self, at: usize, v: u16) {
        self.wmask[at..at + 2].copy_from_slice(&v.to_le_bytes());
    }
    fn wmask32(&mut self, at: usize, v: u32) {
        self.wmask[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    pub fn read8(&self, at: usize) -> u8 {
        self.bytes.get(at).copied().unwrap_or(0xff)
    }
    pub fn read16(&self, at: usize) -> u16 {
        u16::from_le_bytes([self.read8(at), self.read8(at + 1)])
    }
    pub fn read32(&self, at: usize) -> u32 {
        u32::from_le_bytes([
            self.read8(at),
            self.read8(at + 1),
            self.read8(at + 2),
            self.read8(at + 3),
        ])
    }

    /// Config space read of any width; bytes past the end read as 0xff.
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = usize::try_from(offset)
                .ok()
                .and_then(|o| o.checked_add(i))
                .map(|o| self.read8(o))
                .unwrap_or(0xff);
        }
    }

    /// Config space write of any width; read-only bits are preserved.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        for (i, &b) in data.iter().enumerate() {
            let Some(o) = usize::try_from(offset).ok().and_then(|o| o.checked_add(i)) else {
                continue;
            };
            if o >= CONFIG_SIZE {
                continue;
            }
            let m = self.wmask[o];
            self.bytes[o] = (self.bytes[o] & !m) | (b & m);
        }
    }

    /// Drops the MSI-X capability and BAR4: the device then interrupts
    /// through INTx only (see `--no-msix`).
    pub fn remove_msix(&mut self) {
        self.bytes[0x34] = CAP_COMMON as u8;
        self.bytes[CAP_MSIX..CAP_MSIX + 12].fill(0);
        self.wmask[CAP_MSIX..CAP_MSIX + 12].fill(0);
        self.set32(0x20, 0);
        self.wmask32(0x20, 0);
    }

    pub fn msix_enabled(&self) -> bool {
        self.read16(CAP_MSIX + 2) & MSIX_CTRL_ENABLE != 0
    }
    pub fn msix_masked(&self) -> bool {
        self.read16(CAP_MSIX + 2) & MSIX_CTRL_MASKALL != 0
    }
    pub fn intx_disabled(&self) -> bool {
        self.read16(PCI_COMMAND) & PCI_COMMAND_INTX_DISABLE != 0
    }
    pub fn set_msix_ctrl(&mut self, enable: bool, maskall: bool) {
        let mut v = self.read16(CAP_MSIX + 2) & !(MSIX_CTRL_ENABLE | MSIX_CTRL_MASKALL);
        if enable {
            v |= MSIX_CTRL_ENABLE;
        }
        if maskall {
            v |= MSIX_CTRL_MASKALL;
        }
        self.set16(CAP_MSIX + 2, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Walks the capability list the way Linux' virtio_pci_modern does and
    /// returns (offset, cap id, cfg_type) for every capability.
    fn walk(c: &PciConfigSpace) -> Vec<(usize, u8, u8)> {
        let mut out = vec![];
        assert_ne!(c.read16(0x06) & PCI_STATUS_CAP_LIST, 0);
        let mut pos = c.read8(0x34) as usize;
        let mut guard = 0;
        while pos != 0 {
            assert!((0x40..CONFIG_SIZE).contains(&pos), "cap pointer {pos:#x}");
            assert_eq!(pos % 4, 0, "cap alignment");
            out.push((pos, c.read8(pos), c.read8(pos + 3)));
            pos = c.read8(pos + 1) as usize;
            guard += 1;
            assert!(guard < 48, "capability loop");
        }
        out
    }

    #[test]
    fn header_identifies_modern_virtio_media() {
        let c = PciConfigSpace::new(42, 256 << 20);
        assert_eq!(c.read16(0x00), 0x1af4);
        assert_eq!(c.read16(0x02), 0x1040 + 42);
        assert_eq!(c.read8(0x08), 1, "revision");
        assert_eq!(c.read32(0x08) >> 8, 0x040000, "class multimedia video");
        assert_eq!(c.read16(0x2c), 0x1af4);
        assert!(c.read16(0x2e) >= 0x40);
        assert_eq!(c.read8(0x3d), 1);
        let c48 = PciConfigSpace::new(48, 1 << 20);
        assert_eq!(c48.read16(0x02), 0x1070);
    }

    #[test]
    fn capability_chain_has_every_virtio_structure() {
        let shm = 256u64 << 20;
        let c = PciConfigSpace::new(42, shm);
        let caps = walk(&c);
        let vendor: Vec<u8> = caps
            .iter()
            .filter(|(_, id, _)| *id == PCI_CAP_ID_VNDR)
            .map(|(_, _, t)| *t)
            .collect();
        assert_eq!(vendor, vec![1, 2, 3, 4, 8]);
        assert!(caps.iter().any(|(_, id, _)| *id == PCI_CAP_ID_MSIX));

        for &(pos, id, cfg_type) in &caps {
            if id != PCI_CAP_ID_VNDR {
                continue;
            }
            let bar = c.read8(pos + 4) as u32;
            let off = c.read32(pos + 8) as u64;
            let len = c.read32(pos + 12) as u64;
            match cfg_type {
                VIRTIO_PCI_CAP_COMMON_CFG => {
                    assert_eq!(c.read8(pos + 2), 16);
                    assert_eq!((bar, off), (0, COMMON_OFF));
                    assert!(len >= 0x38);
                }
                VIRTIO_PCI_CAP_NOTIFY_CFG => {
                    assert_eq!(c.read8(pos + 2), 20);
                    assert_eq!(bar, 0);
                    assert_eq!(c.read32(pos + 16), NOTIFY_OFF_MULTIPLIER);
                    // both queues' notify addresses are inside the structure
                    assert!(NOTIFY_OFF_MULTIPLIER as u64 + 2 <= len);
                }
                VIRTIO_PCI_CAP_ISR_CFG => assert_eq!((bar, off, len), (0, ISR_OFF, 1)),
                VIRTIO_PCI_CAP_DEVICE_CFG => assert_eq!((bar, off, len), (0, DEVICE_OFF, 40)),
                VIRTIO_PCI_CAP_SHARED_MEMORY_CFG => {
                    assert_eq!(c.read8(pos + 2), 24, "virtio_pci_cap64");
                    assert_eq!(bar, 2);
                    assert_eq!(c.read8(pos + 5), 0, "shmid");
                    let off64 = off | (c.read32(pos + 16) as u64) << 32;
                    let len64 = len | (c.read32(pos + 20) as u64) << 32;
                    assert_eq!((off64, len64), (0, shm));
                }
                t => panic!("unexpected cfg_type {t}"),
            }
            if cfg_type != VIRTIO_PCI_CAP_SHARED_MEMORY_CFG {
                assert!(off + len <= BAR0_SIZE);
            }
        }
        // MSI-X table/PBA in BAR4.
        let (pos, _, _) = *caps
            .iter()
            .find(|(_, id, _)| *id == PCI_CAP_ID_MSIX)
            .unwrap();
        assert_eq!(c.read16(pos + 2) & 0x7ff, MSIX_VECTORS - 1);
        assert_eq!(c.read32(pos + 4), BAR_MSIX);
        assert_eq!(c.read32(pos + 8), 0x800 | BAR_MSIX);
    }

    #[test]
    fn bar_sizing_and_types() {
        let shm = 256u64 << 20;
        let mut c = PciConfigSpace::new(42, shm);
        assert_eq!(c.read32(0x18) & 0xf, 0b1100, "64-bit prefetchable");
        assert_eq!(c.read32(0x10) & 0xf, 0, "32-bit mem");
        for bar in [0x10u64, 0x18, 0x1c, 0x20] {
            c.write(bar, &0xffff_ffffu32.to_le_bytes());
        }
        assert_eq!(c.read32(0x10), !(BAR0_SIZE as u32 - 1) & !0xf);
        let lo = c.read32(0x18) as u64 & !0xf;
        let hi = c.read32(0x1c) as u64;
        assert_eq!(!((hi << 32) | lo) + 1, shm);
        assert_eq!(c.read32(0x20), !(MSIX_BAR_SIZE as u32 - 1));
        // read-only identity
        c.write(0, &[0, 0, 0, 0]);
        assert_eq!(c.read16(0), 0x1af4);
    }

    #[test]
    fn no_shm_capability_without_shared_memory() {
        let c = PciConfigSpace::new(42, 0);
        let caps = walk(&c);
        let vendor: Vec<u8> = caps
            .iter()
            .filter(|(_, id, _)| *id == PCI_CAP_ID_VNDR)
            .map(|(_, _, t)| *t)
            .collect();
        assert_eq!(vendor, vec![1, 2, 3, 4], "no SHARED_MEMORY (8) capability");
        assert!(caps.iter().any(|(_, id, _)| *id == PCI_CAP_ID_MSIX));
        assert_eq!(
            caps.last().map(|c| c.0),
            Some(CAP_DEVICE),
            "list ends at DEVICE"
        );
        // Nothing left over where the capability used to be.
        assert!((CAP_SHM..CAP_SHM + 24).all(|o| c.read8(o) == 0));
        // The other structures are where they always are.
        let with_shm = PciConfigSpace::new(42, 1 << 20);
        assert_eq!(walk(&with_shm)[..caps.len()], caps[..]);
    }

    #[test]
    fn no_shm_bar_is_not_implemented() {
        let mut c = PciConfigSpace::new(42, 0);
        assert_eq!((c.read32(0x18), c.read32(0x1c)), (0, 0));
        for bar in [0x10u64, 0x18, 0x1c, 0x20] {
            c.write(bar, &0xffff_ffffu32.to_le_bytes());
        }
        // Sizing BAR2/3 reads back 0: not implemented.
        assert_eq!((c.read32(0x18), c.read32(0x1c)), (0, 0));
        // BAR0 and BAR4 are unchanged.
        assert_eq!(c.read32(0x10), !(BAR0_SIZE as u32 - 1) & !0xf);
        assert_eq!(c.read32(0x20), !(MSIX_BAR_SIZE as u32 - 1));
    }

    #[test]
    fn no_msix_leaves_intx_only() {
        let mut c = PciConfigSpace::new(42, 1 << 20);
        let with_msix = walk(&c);
        c.remove_msix();
        let caps = walk(&c);
        assert!(!caps.iter().any(|(_, id, _)| *id == PCI_CAP_ID_MSIX));
        assert_eq!(
            caps[..],
            with_msix[1..],
            "the virtio structures stay where they are"
        );
        // BAR4 is not implemented and MSI-X cannot be enabled.
        c.write(0x20, &0xffff_ffffu32.to_le_bytes());
        assert_eq!(c.read32(0x20), 0);
        c.write((CAP_MSIX + 3) as u64, &[0x80]);
        assert!(!c.msix_enabled());
        assert_eq!(c.read8(0x3d), 1, "INTA#");
    }

    #[test]
    fn msix_enable_and_intx_disable_bits() {
        let mut c = PciConfigSpace::new(42, 1 << 20);
        assert!(!c.msix_enabled());
        c.write((CAP_MSIX + 3) as u64, &[0x80]);
        assert!(c.msix_enabled());
        assert!(!c.msix_masked());
        assert_eq!(
            c.read16(CAP_MSIX + 2) & 0x7ff,
            MSIX_VECTORS - 1,
            "table size RO"
        );
        c.write(
            PCI_COMMAND as u64,
            &(PCI_COMMAND_INTX_DISABLE | 0x6).to_le_bytes(),
        );
        assert!(c.intx_disabled());
        let mut out = [0u8; 4];
        c.read(254, &mut out);
        assert_eq!(out, [0, 0, 0xff, 0xff]);
    }
}
