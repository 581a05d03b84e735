/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Out-of-line wrappers for the static inline C functions and macros the
 * driver needs; Rust cannot call those directly.
 */
#ifndef VIRTIO_MEDIA_FFI_HELPERS_H
#define VIRTIO_MEDIA_FFI_HELPERS_H

#include <linux/types.h>
#include <linux/virtio_config.h>
#include <linux/dma-direction.h>
#include <linux/mm_types.h>

int virtio_media_register_driver(struct virtio_driver *drv);
void virtio_media_unregister_driver(struct virtio_driver *drv);
void virtio_media_read_config(struct virtio_device *vdev, void *buf, unsigned int offset,
			      unsigned int len);
bool virtio_media_get_shm_region(struct virtio_device *vdev, struct virtio_shm_region *region,
				 u8 id);

int virtio_media_find_vqs(struct virtio_device *vdev, struct virtqueue *vqs[2],
			  vq_callback_t *commandq_done, vq_callback_t *eventq_done);
void virtio_media_del_vqs(struct virtio_device *vdev);
void virtio_media_device_ready(struct virtio_device *vdev);

struct file;
struct page;
struct poll_table_struct;
struct vm_area_struct;
struct vm_operations_struct;
struct wait_queue_head;

void virtio_media_poll_wait(struct file *file, struct wait_queue_head *wq,
			    struct poll_table_struct *pt);

__poll_t virtio_media_poll_requested(struct poll_table_struct *pt);

unsigned long virtio_media_vma_pgoff(struct vm_area_struct *vma);
unsigned long virtio_media_vma_len(struct vm_area_struct *vma);
bool virtio_media_vma_shared(struct vm_area_struct *vma);
bool virtio_media_vma_writable(struct vm_area_struct *vma);
void *virtio_media_vma_private(struct vm_area_struct *vma);
struct vm_fault;
struct inode;
void virtio_media_vma_setup_pfnmap(struct vm_area_struct *vma,
				   const struct vm_operations_struct *ops, void *private_data);
struct vm_area_struct *virtio_media_vmf_vma(struct vm_fault *vmf);
vm_fault_t virtio_media_vma_insert_pfns(struct vm_fault *vmf, u64 phys, unsigned long pgoff,
					u64 len);
struct inode *virtio_media_file_inode_get(struct file *file);
void virtio_media_inode_put(struct inode *inode);
void virtio_media_inode_unmap_all(struct inode *inode);
int virtio_media_vma_map_pages(struct vm_area_struct *vma, struct page **pages, unsigned long count);

struct device *virtio_media_dmabuf_device(struct virtqueue *vq);
int virtio_media_export_pages(struct page *const *pages, unsigned long count, unsigned int flags);
struct sg_table;
unsigned int virtio_media_sgt_dma_segments(struct sg_table *sgt, u64 *addrs, u32 *lens,
					   unsigned int max);
dma_addr_t virtio_media_map_page(struct virtqueue *vq, struct page *page, size_t offset,
				 size_t len, enum dma_data_direction dir);

struct workqueue_struct;
struct workqueue_struct *virtio_media_alloc_workqueue(void);

#endif
