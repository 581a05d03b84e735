// SPDX-License-Identifier: GPL-2.0
//! virtio-pci modern transport state: the common configuration structure
//! (feature negotiation, device status, queue setup), notifications, ISR.
//!
//! This module is pure state; it tells the caller what to do with the
//! returned [`Action`] (process a queue, reset the device).

use virtio_queue::{Queue, QueueT};

pub const NUM_QUEUES: usize = 2;
pub const QUEUE_MAX_SIZE: u16 = 256;
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;
pub const VIRTIO_MSI_NO_VECTOR: u16 = 0xffff;

pub const STATUS_ACKNOWLEDGE: u8 = 1;
pub const STATUS_DRIVER: u8 = 2;
pub const STATUS_DRIVER_OK: u8 = 4;
pub const STATUS_FEATURES_OK: u8 = 8;
pub const STATUS_NEEDS_RESET: u8 = 0x40;
pub const STATUS_FAILED: u8 = 0x80;

pub const ISR_QUEUE: u8 = 1;
pub const ISR_CONFIG: u8 = 2;

/// Offsets inside struct virtio_pci_common_cfg (+ modern extensions).
pub mod reg {
    pub const DEVICE_FEATURE_SELECT: u64 = 0x00;
    pub const DEVICE_FEATURE: u64 = 0x04;
    pub const DRIVER_FEATURE_SELECT: u64 = 0x08;
    pub const DRIVER_FEATURE: u64 = 0x0c;
    pub const MSIX_CONFIG: u64 = 0x10;
    pub const NUM_QUEUES: u64 = 0x12;
    pub const DEVICE_STATUS: u64 = 0x14;
    pub const CONFIG_GENERATION: u64 = 0x15;
    pub const QUEUE_SELECT: u64 = 0x16;
    pub const QUEUE_SIZE: u64 = 0x18;
    pub const QUEUE_MSIX_VECTOR: u64 = 0x1a;
    pub const QUEUE_ENABLE: u64 = 0x1c;
    pub const QUEUE_NOTIFY_OFF: u64 = 0x1e;
    pub const QUEUE_DESC_LO: u64 = 0x20;
    pub const QUEUE_DESC_HI: u64 = 0x24;
    pub const QUEUE_DRIVER_LO: u64 = 0x28;
    pub const QUEUE_DRIVER_HI: u64 = 0x2c;
    pub const QUEUE_DEVICE_LO: u64 = 0x30;
    pub const QUEUE_DEVICE_HI: u64 = 0x34;
    pub const QUEUE_NOTIFY_DATA: u64 = 0x38;
    pub const QUEUE_RESET: u64 = 0x3a;
    pub const ADMIN_QUEUE_INDEX: u64 = 0x3c;
    pub const ADMIN_QUEUE_NUM: u64 = 0x3e;
    pub const END: u64 = 0x40;
}

/// (offset, width) of every field, in order.
const FIELDS: &[(u64, u64)] = &[
    (reg::DEVICE_FEATURE_SELECT, 4),
    (reg::DEVICE_FEATURE, 4),
    (reg::DRIVER_FEATURE_SELECT, 4),
    (reg::DRIVER_FEATURE, 4),
    (reg::MSIX_CONFIG, 2),
    (reg::NUM_QUEUES, 2),
    (reg::DEVICE_STATUS, 1),
    (reg::CONFIG_GENERATION, 1),
    (reg::QUEUE_SELECT, 2),
    (reg::QUEUE_SIZE, 2),
    (reg::QUEUE_MSIX_VECTOR, 2),
    (reg::QUEUE_ENABLE, 2),
    (reg::QUEUE_NOTIFY_OFF, 2),
    (reg::QUEUE_DESC_LO, 4),
    (reg::QUEUE_DESC_HI, 4),
    (reg::QUEUE_DRIVER_LO, 4),
    (reg::QUEUE_DRIVER_HI, 4),
    (reg::QUEUE_DEVICE_LO, 4),
    (reg::QUEUE_DEVICE_HI, 4),
    (reg::QUEUE_NOTIFY_DATA, 2),
    (reg::QUEUE_RESET, 2),
    (reg::ADMIN_QUEUE_INDEX, 2),
    (reg::ADMIN_QUEUE_NUM, 2),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    None,
    /// The driver wrote 0 to device_status: reset everything.
    Reset,
    /// DRIVER_OK was set.
    DriverOk,
    /// A queue was enabled (index).
    QueueEnabled(u16),
}

pub struct Transport {
    pub device_features: u64,
    pub device_feature_select: u32,
    pub driver_feature_select: u32,
    pub driver_features: u64,
    pub msix_config: u16,
    pub status: u8,
    pub config_generation: u8,
    pub queue_select: u16,
    pub queues: Vec<Queue>,
    pub queue_vectors: [u16; NUM_QUEUES],
    pub isr: u8,
    pub msix_vectors: u16,
}

impl Transport {
    pub fn new(msix_vectors: u16) -> Self {
        Transport {
            device_features: VIRTIO_F_VERSION_1,
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            msix_config: VIRTIO_MSI_NO_VECTOR,
            status: 0,
            config_generation: 0,
            queue_select: 0,
            queues: (0..NUM_QUEUES)
                .map(|_| Queue::new(QUEUE_MAX_SIZE).expect("valid queue size"))
                .collect(),
            queue_vectors: [VIRTIO_MSI_NO_VECTOR; NUM_QUEUES],
            isr: 0,
            msix_vectors,
        }
    }

    /// Device reset: back to the power-on state (config_generation keeps
    /// counting so the driver notices).
    pub fn reset(&mut self) {
        let generation = self.config_generation;
        *self = Transport::new(self.msix_vectors);
        self.config_generation = generation;
    }

    pub fn driver_ok(&self) -> bool {
        self.status & STATUS_DRIVER_OK != 0 && self.status & STATUS_NEEDS_RESET == 0
    }

    fn selected(&self) -> Option<usize> {
        let q = self.queue_select as usize;
        (q < NUM_QUEUES).then_some(q)
    }

    fn read_field(&self, off: u64) -> u64 {
        let sel = self.selected();
        let q = sel.map(|i| &self.queues[i]);
        match off {
            reg::DEVICE_FEATURE_SELECT => self.device_feature_select as u64,
            reg::DEVICE_FEATURE => match self.device_feature_select {
                0 => self.device_features & 0xffff_ffff,
                1 => self.device_features >> 32,
                _ => 0,
            },
            reg::DRIVER_FEATURE_SELECT => self.driver_feature_select as u64,
            reg::DRIVER_FEATURE => match self.driver_feature_select {
                0 => self.driver_features & 0xffff_ffff,
                1 => self.driver_features >> 32,
                _ => 0,
            },
            reg::MSIX_CONFIG => self.msix_config as u64,
            reg::NUM_QUEUES => NUM_QUEUES as u64,
            reg::DEVICE_STATUS => self.status as u64,
            reg::CONFIG_GENERATION => self.config_generation as u64,
            reg::QUEUE_SELECT => self.queue_select as u64,
            reg::QUEUE_SIZE => q.map(|q| q.size() as u64).unwrap_or(0),
            reg::QUEUE_MSIX_VECTOR => sel
                .map(|i| self.queue_vectors[i] as u64)
                .unwrap_or(VIRTIO_MSI_NO_VECTOR as u64),
            reg::QUEUE_ENABLE => q.map(|q| q.ready() as u64).unwrap_or(0),
            reg::QUEUE_NOTIFY_OFF => sel.map(|i| i as u64).unwrap_or(0),
            reg::QUEUE_DESC_LO => q.map(|q| q.desc_table() & 0xffff_ffff).unwrap_or(0),
            reg::QUEUE_DESC_HI => q.map(|q| q.desc_table() >> 32).unwrap_or(0),
            reg::QUEUE_DRIVER_LO => q.map(|q| q.avail_ring() & 0xffff_ffff).unwrap_or(0),
            reg::QUEUE_DRIVER_HI => q.map(|q| q.avail_ring() >> 32).unwrap_or(0),
            reg::QUEUE_DEVICE_LO => q.map(|q| q.used_ring() & 0xffff_ffff).unwrap_or(0),
            reg::QUEUE_DEVICE_HI => q.map(|q| q.used_ring() >> 32).unwrap_or(0),
            _ => 0,
        }
    }

    fn vector_ok(&self, v: u16) -> u16 {
        if v < self.msix_vectors {
            v
        } else {
            VIRTIO_MSI_NO_VECTOR
        }
    }

    fn write_field(&mut self, off: u64, val: u64) -> Action {
        let sel = self.selected();
        // Queue configuration may only change while the queue is disabled.
        let q_writable = sel.map(|i| !self.queues[i].ready()).unwrap_or(false);
        match off {
            reg::DEVICE_FEATURE_SELECT => self.device_feature_select = val as u32,
            reg::DRIVER_FEATURE_SELECT => self.driver_feature_select = val as u32,
            reg::DRIVER_FEATURE => {
                if self.status & STATUS_FEATURES_OK != 0 {
                    log::warn!("driver_feature written after FEATURES_OK, ignored");
                    return Action::None;
                }
                match self.driver_feature_select {
                    0 => self.driver_features = (self.driver_features & !0xffff_ffff) | val,
                    1 => self.driver_features = (self.driver_features & 0xffff_ffff) | (val << 32),
                    _ => {}
                }
            }
            reg::MSIX_CONFIG => self.msix_config = self.vector_ok(val as u16),
            reg::DEVICE_STATUS => return self.write_status(val as u8),
            reg::QUEUE_SELECT => self.queue_select = val as u16,
            reg::QUEUE_SIZE if q_writable => {
                let size = val as u16;
                let i = sel.unwrap_or(0);
                if size == 0 || size > QUEUE_MAX_SIZE || !size.is_power_of_two() {
                    log::warn!("queue {i}: invalid size {size}, ignored");
                } else {
                    self.queues[i].set_size(size);
                }
            }
            reg::QUEUE_MSIX_VECTOR => {
                if let Some(i) = sel {
                    self.queue_vectors[i] = self.vector_ok(val as u16);
                }
            }
            reg::QUEUE_ENABLE => {
                if let Some(i) = sel {
                    if val == 1 && !self.queues[i].ready() {
                        self.queues[i].set_ready(true);
                        return Action::QueueEnabled(i as u16);
                    }
                    // Writing 0 is not allowed by the spec (use queue_reset).
                }
            }
            reg::QUEUE_DESC_LO if q_writable => {
                self.queues[sel.unwrap_or(0)].set_desc_table_address(Some(val as u32), None)
            }
            reg::QUEUE_DESC_HI if q_writable => {
                self.queues[sel.unwrap_or(0)].set_desc_table_address(None, Some(val as u32))
            }
            reg::QUEUE_DRIVER_LO if q_writable => {
                self.queues[sel.unwrap_or(0)].set_avail_ring_address(Some(val as u32), None)
            }
            reg::QUEUE_DRIVER_HI if q_writable => {
                self.queues[sel.unwrap_or(0)].set_avail_ring_address(None, Some(val as u32))
            }
            reg::QUEUE_DEVICE_LO if q_writable => {
                self.queues[sel.unwrap_or(0)].set_used_ring_address(Some(val as u32), None)
            }
            reg::QUEUE_DEVICE_HI if q_writable => {
                self.queues[sel.unwrap_or(0)].set_used_ring_address(None, Some(val as u32))
            }
            _ => log::debug!("common cfg: write {val:#x} to {off:#x} ignored"),
        }
        Action::None
    }

    fn write_status(&mut self, val: u8) -> Action {
        if val == 0 {
            log::info!("device reset by driver");
            self.reset();
            return Action::Reset;
        }
        let old = self.status;
        let mut new = val;
        if new & STATUS_FEATURES_OK != 0 && old & STATUS_FEATURES_OK == 0 {
            let unknown = self.driver_features & !self.device_features;
            if unknown != 0 || self.driver_features & VIRTIO_F_VERSION_1 == 0 {
                log::warn!(
                    "driver features {:#x} not acceptable (offered {:#x}); FEATURES_OK refused",
                    self.driver_features,
                    self.device_features
                );
                new &= !STATUS_FEATURES_OK;
            }
        }
        // Bits can only be added until reset.
        self.status = old | new;
        if self.status & STATUS_DRIVER_OK != 0 && old & STATUS_DRIVER_OK == 0 {
            log::info!("DRIVER_OK (features {:#x})", self.driver_features);
            return Action::DriverOk;
        }
        Action::None
    }

    /// Read from the common configuration structure (offset relative to it).
    pub fn common_read(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            let o = offset.saturating_add(i as u64);
            *b = FIELDS
                .iter()
                .find(|(f, w)| o >= *f && o < f + w)
                .map(|(f, _)| (self.read_field(*f) >> ((o - f) * 8)) as u8)
                .unwrap_or(0);
        }
    }

    /// Write to the common configuration structure. Writes may be of any
    /// width; every field touched is updated with the bytes written merged
    /// into its current value.
    pub fn common_write(&mut self, offset: u64, data: &[u8]) -> Vec<Action> {
        let end = offset.saturating_add(data.len() as u64);
        let mut actions = vec![];
        for &(f, w) in FIELDS {
            if f + w <= offset || f >= end {
                continue;
            }
            let mut val = self.read_field(f);
            for k in 0..w {
                let o = f + k;
                if o >= offset && o < end {
                    let byte = data[(o - offset) as usize] as u64;
                    val = (val & !(0xff << (k * 8))) | (byte << (k * 8));
                }
            }
            let a = self.write_field(f, val);
            if a != Action::None {
                actions.push(a);
            }
        }
        actions
    }

    /// ISR read: returns and clears the ISR bits.
    pub fn isr_read(&mut self) -> u8 {
        std::mem::take(&mut self.isr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r32(t: &Transport, off: u64) -> u32 {
        let mut b = [0u8; 4];
        t.common_read(off, &mut b);
        u32::from_le_bytes(b)
    }
    fn r16(t: &Transport, off: u64) -> u16 {
        let mut b = [0u8; 2];
        t.common_read(off, &mut b);
        u16::from_le_bytes(b)
    }
    fn r8(t: &Transport, off: u64) -> u8 {
        let mut b = [0u8; 1];
        t.common_read(off, &mut b);
        b[0]
    }
    fn w32(t: &mut Transport, off: u64, v: u32) -> Vec<Action> {
        t.common_write(off, &v.to_le_bytes())
    }
    fn w16(t: &mut Transport, off: u64, v: u16) -> Vec<Action> {
        t.common_write(off, &v.to_le_bytes())
    }
    fn w8(t: &mut Transport, off: u64, v: u8) -> Vec<Action> {
        t.common_write(off, &[v])
    }

    #[test]
    fn feature_negotiation() {
        let mut t = Transport::new(4);
        w32(&mut t, reg::DEVICE_FEATURE_SELECT, 0);
        assert_eq!(r32(&t, reg::DEVICE_FEATURE), 0);
        w32(&mut t, reg::DEVICE_FEATURE_SELECT, 1);
        assert_eq!(r32(&t, reg::DEVICE_FEATURE), 1, "VIRTIO_F_VERSION_1");
        w32(&mut t, reg::DEVICE_FEATURE_SELECT, 2);
        assert_eq!(r32(&t, reg::DEVICE_FEATURE), 0);
        assert_eq!(r16(&t, reg::NUM_QUEUES), 2);

        // Driver without VERSION_1: FEATURES_OK refused.
        w8(
            &mut t,
            reg::DEVICE_STATUS,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER,
        );
        w8(
            &mut t,
            reg::DEVICE_STATUS,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
        );
        assert_eq!(r8(&t, reg::DEVICE_STATUS) & STATUS_FEATURES_OK, 0);

        // Unknown feature: refused.
        w8(&mut t, reg::DEVICE_STATUS, 0);
        w32(&mut t, reg::DRIVER_FEATURE_SELECT, 1);
        w32(&mut t, reg::DRIVER_FEATURE, 1 | 2);
        w8(&mut t, reg::DEVICE_STATUS, STATUS_FEATURES_OK);
        assert_eq!(r8(&t, reg::DEVICE_STATUS) & STATUS_FEATURES_OK, 0);

        // Proper negotiation.
        w8(&mut t, reg::DEVICE_STATUS, 0);
        w32(&mut t, reg::DRIVER_FEATURE_SELECT, 1);
        w32(&mut t, reg::DRIVER_FEATURE, 1);
        assert_eq!(r32(&t, reg::DRIVER_FEATURE), 1);
        let s = STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK;
        w8(&mut t, reg::DEVICE_STATUS, s);
        assert_eq!(r8(&t, reg::DEVICE_STATUS), s);
        assert_eq!(t.driver_features, VIRTIO_F_VERSION_1);
        let a = w8(&mut t, reg::DEVICE_STATUS, s | STATUS_DRIVER_OK);
        assert_eq!(a, vec![Action::DriverOk]);
        assert!(t.driver_ok());
    }

    #[test]
    fn queue_setup_and_reset() {
        let mut t = Transport::new(4);
        w16(&mut t, reg::QUEUE_SELECT, 1);
        assert_eq!(r16(&t, reg::QUEUE_SIZE), QUEUE_MAX_SIZE);
        assert_eq!(r16(&t, reg::QUEUE_NOTIFY_OFF), 1);
        w16(&mut t, reg::QUEUE_SIZE, 64);
        w16(&mut t, reg::QUEUE_SIZE, 100); // not a power of two: ignored
        w16(&mut t, reg::QUEUE_SIZE, 512); // too big: ignored
        assert_eq!(r16(&t, reg::QUEUE_SIZE), 64);
        // 64-bit write in one go and split writes.
        t.common_write(reg::QUEUE_DESC_LO, &0x1_2345_6000u64.to_le_bytes());
        w32(&mut t, reg::QUEUE_DRIVER_LO, 0x7000);
        w32(&mut t, reg::QUEUE_DRIVER_HI, 0x1);
        w32(&mut t, reg::QUEUE_DEVICE_LO, 0x8000);
        assert_eq!(t.queues[1].desc_table(), 0x1_2345_6000);
        assert_eq!(t.queues[1].avail_ring(), 0x1_0000_7000);
        assert_eq!(t.queues[1].used_ring(), 0x8000);
        assert_eq!(r32(&t, reg::QUEUE_DESC_HI), 1);
        w16(&mut t, reg::QUEUE_MSIX_VECTOR, 2);
        assert_eq!(r16(&t, reg::QUEUE_MSIX_VECTOR), 2);
        w16(&mut t, reg::QUEUE_MSIX_VECTOR, 9); // beyond the table: NO_VECTOR
        assert_eq!(r16(&t, reg::QUEUE_MSIX_VECTOR), VIRTIO_MSI_NO_VECTOR);
        w16(&mut t, reg::QUEUE_MSIX_VECTOR, 1);
        w16(&mut t, reg::MSIX_CONFIG, 0);
        assert_eq!(r16(&t, reg::MSIX_CONFIG), 0);
        assert_eq!(
            w16(&mut t, reg::QUEUE_ENABLE, 1),
            vec![Action::QueueEnabled(1)]
        );
        assert_eq!(r16(&t, reg::QUEUE_ENABLE), 1);
        // Enabled queue: config frozen.
        w16(&mut t, reg::QUEUE_SIZE, 32);
        assert_eq!(r16(&t, reg::QUEUE_SIZE), 64);
        // Queue 0 untouched.
        w16(&mut t, reg::QUEUE_SELECT, 0);
        assert_eq!(r16(&t, reg::QUEUE_ENABLE), 0);
        // Nonexistent queue.
        w16(&mut t, reg::QUEUE_SELECT, 7);
        assert_eq!(r16(&t, reg::QUEUE_SIZE), 0);
        w16(&mut t, reg::QUEUE_ENABLE, 1);

        t.isr = ISR_QUEUE;
        assert_eq!(w8(&mut t, reg::DEVICE_STATUS, 0), vec![Action::Reset]);
        assert_eq!(r8(&t, reg::DEVICE_STATUS), 0);
        assert_eq!(t.isr, 0);
        assert_eq!(t.driver_features, 0);
        assert_eq!(r16(&t, reg::MSIX_CONFIG), VIRTIO_MSI_NO_VECTOR);
        for q in 0..2 {
            w16(&mut t, reg::QUEUE_SELECT, q);
            assert_eq!(r16(&t, reg::QUEUE_ENABLE), 0);
            assert_eq!(r16(&t, reg::QUEUE_SIZE), QUEUE_MAX_SIZE);
            assert_eq!(r32(&t, reg::QUEUE_DESC_LO), 0);
            assert_eq!(r16(&t, reg::QUEUE_MSIX_VECTOR), VIRTIO_MSI_NO_VECTOR);
        }
    }

    #[test]
    fn isr_read_clears() {
        let mut t = Transport::new(4);
        t.isr = ISR_QUEUE | ISR_CONFIG;
        assert_eq!(t.isr_read(), 3);
        assert_eq!(t.isr_read(), 0);
    }
}
