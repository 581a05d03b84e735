// SPDX-License-Identifier: GPL-2.0
//! vfio-user side: region/IRQ layout offered to the client and the
//! `ServerBackend` that forwards accesses to [`VirtioMediaPci`].

use std::fs::File;
use std::mem::size_of;
use std::sync::{Arc, Mutex};

use vfio_bindings::bindings::vfio::{
    vfio_region_info, vfio_region_sparse_mmap_area, VFIO_IRQ_INFO_AUTOMASKED,
    VFIO_IRQ_INFO_EVENTFD, VFIO_IRQ_INFO_MASKABLE, VFIO_IRQ_INFO_NORESIZE,
    VFIO_PCI_CONFIG_REGION_INDEX, VFIO_PCI_NUM_IRQS, VFIO_PCI_NUM_REGIONS,
    VFIO_REGION_INFO_FLAG_MMAP, VFIO_REGION_INFO_FLAG_READ, VFIO_REGION_INFO_FLAG_WRITE,
};
use vfio_user::{DmaMapFlags, DmaUnmapFlags, IrqInfo, ServerBackend, ServerRegion, SparseArea};

use crate::device::{VirtioMediaPci, VFIO_PCI_INTX_IRQ_INDEX, VFIO_PCI_MSIX_IRQ_INDEX};
use crate::pci;

/// Region layout offered to the client. `shm_fd` is the shared-memory
/// memfd; `None` (a device without shared memory) leaves the BAR2 region
/// absent: size 0, no flags, no fd, so the client maps nothing. Without
/// `msix`, the MSI-X BAR (BAR4) is absent the same way.
pub fn regions(shm_size: u64, shm_fd: Option<i32>, msix: bool) -> Vec<ServerRegion> {
    (0..VFIO_PCI_NUM_REGIONS)
        .map(|index| {
            let mut info = vfio_region_info {
                argsz: size_of::<vfio_region_info>() as u32,
                index,
                ..Default::default()
            };
            let rw = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
            let mut sparse_areas = vec![];
            let mut mmap_fd = None;
            match index {
                i if i == pci::BAR0 => {
                    info.size = pci::BAR0_SIZE;
                    info.flags = rw;
                }
                i if i == pci::BAR_SHM => {
                    let Some(shm_fd) = shm_fd.filter(|_| shm_size > 0) else {
                        // No shared memory: like any unused region.
                        return ServerRegion {
                            region_info: info,
                            sparse_areas,
                            mmap_fd,
                        };
                    };
                    info.size = shm_size;
                    info.flags = rw | VFIO_REGION_INFO_FLAG_MMAP;
                    // The crate only sends the fd together with a sparse
                    // mmap capability: cover the whole BAR with one area.
                    sparse_areas.push(SparseArea {
                        area: vfio_region_sparse_mmap_area {
                            offset: 0,
                            size: shm_size,
                        },
                    });
                    mmap_fd = Some(shm_fd);
                }
                i if i == pci::BAR_MSIX && msix => {
                    info.size = pci::MSIX_BAR_SIZE;
                    info.flags = rw;
                }
                VFIO_PCI_CONFIG_REGION_INDEX => {
                    info.size = pci::CONFIG_SIZE as u64;
                    info.flags = rw;
                }
                _ => {}
            }
            ServerRegion {
                region_info: info,
                sparse_areas,
                mmap_fd,
            }
        })
        .collect()
}

/// Interrupts offered to the client: INTx, and MSI-X unless `msix` is false.
pub fn irqs(msix: bool) -> Vec<IrqInfo> {
    (0..VFIO_PCI_NUM_IRQS)
        .map(|index| match index {
            VFIO_PCI_INTX_IRQ_INDEX => IrqInfo {
                index,
                count: 1,
                flags: VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_MASKABLE | VFIO_IRQ_INFO_AUTOMASKED,
            },
            VFIO_PCI_MSIX_IRQ_INDEX if msix => IrqInfo {
                index,
                count: pci::MSIX_VECTORS as u32,
                flags: VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_NORESIZE,
            },
            _ => IrqInfo {
                index,
                count: 0,
                flags: 0,
            },
        })
        .collect()
}

pub struct VfuBackend {
    pub dev: Arc<Mutex<VirtioMediaPci>>,
}

impl VfuBackend {
    fn dev(&self) -> std::io::Result<std::sync::MutexGuard<'_, VirtioMediaPci>> {
        self.dev
            .lock()
            .map_err(|_| std::io::Error::other("device state poisoned"))
    }
}

fn einval() -> std::io::Error {
    std::io::Error::from_raw_os_error(libc::EINVAL)
}

impl ServerBackend for VfuBackend {
    fn region_read(
        &mut self,
        region: u32,
        offset: u64,
        data: &mut [u8],
    ) -> Result<(), std::io::Error> {
        log::trace!("read region {region} offset {offset:#x} len {}", data.len());
        match region {
            VFIO_PCI_CONFIG_REGION_INDEX => self.dev()?.config_read(offset, data),
            r if r == pci::BAR0 => self.dev()?.bar0_read(offset, data),
            r if r == pci::BAR_MSIX => self.dev()?.msix_bar_read(offset, data),
            r if r == pci::BAR_SHM => self
                .dev()?
                .shm
                .read_at(offset, data)
                .map_err(|_| einval())?,
            _ => {
                log::warn!("read of unimplemented region {region}");
                return Err(einval());
            }
        }
        Ok(())
    }

    fn region_write(
        &mut self,
        region: u32,
        offset: u64,
        data: &[u8],
    ) -> Result<(), std::io::Error> {
        log::trace!("write region {region} offset {offset:#x} data {data:02x?}");
        match region {
            VFIO_PCI_CONFIG_REGION_INDEX => self.dev()?.config_write(offset, data),
            r if r == pci::BAR0 => self.dev()?.bar0_write(offset, data),
            r if r == pci::BAR_MSIX => self.dev()?.msix_bar_write(offset, data),
            r if r == pci::BAR_SHM => self
                .dev()?
                .shm
                .write_at(offset, data)
                .map_err(|_| einval())?,
            _ => {
                log::warn!("write to unimplemented region {region}");
                return Err(einval());
            }
        }
        Ok(())
    }

    fn dma_map(
        &mut self,
        flags: DmaMapFlags,
        offset: u64,
        address: u64,
        size: u64,
        fd: Option<File>,
    ) -> Result<(), std::io::Error> {
        log::debug!(
            "DMA_MAP flags {flags:?} {address:#x}+{size:#x} offset {offset:#x} fd {}",
            fd.is_some()
        );
        self.dev()?.dma_map(offset, address, size, fd)
    }

    fn dma_unmap(
        &mut self,
        flags: DmaUnmapFlags,
        address: u64,
        size: u64,
    ) -> Result<(), std::io::Error> {
        self.dev()?
            .dma_unmap(address, size, flags.contains(DmaUnmapFlags::UNMAP_ALL))
    }

    fn reset(&mut self) -> Result<(), std::io::Error> {
        log::info!("vfio-user DEVICE_RESET");
        let mut dev = self.dev()?;
        dev.transport.reset();
        dev.device_reset();
        Ok(())
    }

    fn set_irqs(
        &mut self,
        index: u32,
        flags: u32,
        start: u32,
        count: u32,
        fds: Vec<File>,
    ) -> Result<(), std::io::Error> {
        self.dev()?.set_irqs(index, flags, start, count, fds);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shm_region_with_and_without_shared_memory() {
        let with = regions(1 << 20, Some(7), true);
        let bar2 = &with[pci::BAR_SHM as usize];
        assert_eq!(bar2.region_info.size, 1 << 20);
        assert_ne!(bar2.region_info.flags & VFIO_REGION_INFO_FLAG_MMAP, 0);
        assert_eq!(bar2.mmap_fd, Some(7));
        assert_eq!(bar2.sparse_areas.len(), 1);

        let without = regions(0, None, true);
        assert_eq!(without.len(), with.len());
        let bar2 = &without[pci::BAR_SHM as usize];
        assert_eq!(bar2.region_info.index, pci::BAR_SHM);
        assert_eq!((bar2.region_info.size, bar2.region_info.flags), (0, 0));
        assert!(bar2.mmap_fd.is_none() && bar2.sparse_areas.is_empty());
        // Everything else is unchanged.
        for i in [pci::BAR0, pci::BAR_MSIX, VFIO_PCI_CONFIG_REGION_INDEX] {
            let (a, b) = (
                &with[i as usize].region_info,
                &without[i as usize].region_info,
            );
            assert_eq!((a.size, a.flags), (b.size, b.flags), "region {i}");
        }
    }

    #[test]
    fn no_msix_region_or_vectors() {
        let with = regions(1 << 20, Some(7), true);
        let without = regions(1 << 20, Some(7), false);
        let bar4 = &without[pci::BAR_MSIX as usize].region_info;
        assert_eq!((bar4.size, bar4.flags), (0, 0));
        assert_eq!(
            with[pci::BAR_MSIX as usize].region_info.size,
            pci::MSIX_BAR_SIZE
        );
        for i in [pci::BAR0, pci::BAR_SHM, VFIO_PCI_CONFIG_REGION_INDEX] {
            let (a, b) = (
                &with[i as usize].region_info,
                &without[i as usize].region_info,
            );
            assert_eq!((a.size, a.flags), (b.size, b.flags), "region {i}");
        }
        let count = |msix, index| {
            irqs(msix)
                .iter()
                .find(|i| i.index == index)
                .map(|i| i.count)
        };
        assert_eq!(
            count(true, VFIO_PCI_MSIX_IRQ_INDEX),
            Some(pci::MSIX_VECTORS as u32)
        );
        assert_eq!(count(false, VFIO_PCI_MSIX_IRQ_INDEX), Some(0));
        assert_eq!(count(false, VFIO_PCI_INTX_IRQ_INDEX), Some(1));
    }
}
