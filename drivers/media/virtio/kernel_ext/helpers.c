// SPDX-License-Identifier: GPL-2.0
#include <linux/dma-buf.h>
#include <linux/fs.h>
#include <linux/iommu.h>
#include <linux/mm.h>
#include <linux/scatterlist.h>
#include <linux/slab.h>
#include <linux/module.h>
#include <linux/poll.h>
#include <linux/workqueue.h>
#include <linux/virtio.h>
#include <linux/virtio_config.h>
#include "helpers.h"

int virtio_media_register_driver(struct virtio_driver *drv)
{
	return register_virtio_driver(drv);
}

void virtio_media_unregister_driver(struct virtio_driver *drv)
{
	unregister_virtio_driver(drv);
}

void virtio_media_read_config(struct virtio_device *vdev, void *buf, unsigned int offset,
			      unsigned int len)
{
	virtio_cread_bytes(vdev, offset, buf, len);
}

bool virtio_media_get_shm_region(struct virtio_device *vdev, struct virtio_shm_region *region,
				 u8 id)
{
	return virtio_get_shm_region(vdev, region, id);
}

int virtio_media_find_vqs(struct virtio_device *vdev, struct virtqueue *vqs[2],
			  vq_callback_t *commandq_done, vq_callback_t *eventq_done)
{
	struct virtqueue_info info[2] = {
		{ .name = "commandq", .callback = commandq_done },
		{ .name = "eventq", .callback = eventq_done },
	};

	return virtio_find_vqs(vdev, 2, vqs, info, NULL);
}

void virtio_media_del_vqs(struct virtio_device *vdev)
{
	vdev->config->del_vqs(vdev);
}

/*
 * virtio_reset_device(), unless the device is gone: a virtio-pci device
 * whose process died or that was surprise-removed reads all-ones, and
 * vp_reset() would poll its status forever for a 0. Such a device does no
 * DMA and raises no interrupt any more. Returns whether it was reset.
 */
bool virtio_media_reset_device(struct virtio_device *vdev)
{
	if (vdev->config->get_status(vdev) == 0xff)
		return false;
	virtio_reset_device(vdev);
	return true;
}

void virtio_media_device_ready(struct virtio_device *vdev)
{
	virtio_device_ready(vdev);
}

void virtio_media_poll_wait(struct file *file, struct wait_queue_head *wq,
			    struct poll_table_struct *pt)
{
	poll_wait(file, wq, pt);
}

__poll_t virtio_media_poll_requested(struct poll_table_struct *pt)
{
	return poll_requested_events(pt);
}

unsigned long virtio_media_vma_pgoff(struct vm_area_struct *vma)
{
	return vma->vm_pgoff;
}

unsigned long virtio_media_vma_len(struct vm_area_struct *vma)
{
	return vma->vm_end - vma->vm_start;
}

bool virtio_media_vma_shared(struct vm_area_struct *vma)
{
	return vma->vm_flags & VM_SHARED;
}

bool virtio_media_vma_writable(struct vm_area_struct *vma)
{
	return vma->vm_flags & VM_WRITE;
}

void *virtio_media_vma_private(struct vm_area_struct *vma)
{
	return vma->vm_private_data;
}

/* A mapping made read-only stays so: mprotect() cannot make it writable. */
static void virtio_media_vma_keep_readonly(struct vm_area_struct *vma)
{
	if (!(vma->vm_flags & VM_WRITE))
		vm_flags_clear(vma, VM_MAYWRITE);
}

/*
 * Sets @vma up to map device memory page by page from @ops->fault (see
 * virtio_media_vma_insert_pfns), so that the driver can refuse faults and
 * zap the mapping once the device is gone.
 */
void virtio_media_vma_setup_pfnmap(struct vm_area_struct *vma,
				   const struct vm_operations_struct *ops, void *private_data)
{
	vm_flags_set(vma, VM_IO | VM_PFNMAP | VM_DONTEXPAND | VM_DONTDUMP);
	virtio_media_vma_keep_readonly(vma);
	vma->vm_private_data = private_data;
	vma->vm_ops = ops;
}

struct vm_area_struct *virtio_media_vmf_vma(struct vm_fault *vmf)
{
	return vmf->vma;
}

/*
 * Fault handler body: maps the whole of the faulting VMA, page by page, to
 * @len bytes of device memory at @phys, which the original mapping saw at
 * page offset @pgoff (a VMA split later has a larger vm_pgoff). Pages
 * beyond @len get SIGBUS.
 */
vm_fault_t virtio_media_vma_insert_pfns(struct vm_fault *vmf, u64 phys, unsigned long pgoff,
					u64 len)
{
	struct vm_area_struct *vma = vmf->vma;
	unsigned long addr;
	vm_fault_t ret;

	if (vma->vm_pgoff < pgoff)
		return VM_FAULT_SIGBUS;
	for (addr = vma->vm_start; addr < vma->vm_end; addr += PAGE_SIZE) {
		u64 offset = ((u64)(vma->vm_pgoff - pgoff) << PAGE_SHIFT) + (addr - vma->vm_start);

		if (offset >= len)
			return VM_FAULT_SIGBUS;
		ret = vmf_insert_pfn(vma, addr, PHYS_PFN(phys + offset));
		if (ret & VM_FAULT_ERROR)
			return ret;
	}
	return VM_FAULT_NOPAGE;
}

/* The inode a file was opened through, with a reference for the caller. */
struct inode *virtio_media_file_inode_get(struct file *file)
{
	return igrab(file_inode(file));
}

void virtio_media_inode_put(struct inode *inode)
{
	iput(inode);
}

/* Removes every user mapping of @inode's pages: later touches fault. */
void virtio_media_inode_unmap_all(struct inode *inode)
{
	unmap_mapping_range(inode->i_mapping, 0, 0, 1);
}

/*
 * Freezable: no work item (an unmap, an abandoned command's clean-up) runs
 * between a device's freeze and restore, where it could send a command
 * with an id the reset device has forgotten, or given to another.
 *
 * Per CPU: the eventq's work runs on the CPU its interrupt came to, as a
 * streaming program's QBUF, the event and the program's wakeup mostly do.
 * Unbound, the work woke the other, idle CPU for every frame (make
 * bench-c, 640x480 MMAP: 0.62 of the C driver's frame rate, 0.81 per CPU).
 */
struct workqueue_struct *virtio_media_alloc_workqueue(void)
{
	return alloc_workqueue("virtio_media",
			       WQ_PERCPU | WQ_HIGHPRI | WQ_MEM_RECLAIM | WQ_FREEZABLE, 0);
}

/*
 * virtqueue_map_single_attrs() is what knows whether this transport goes
 * through the DMA API or wants physical addresses; it takes a linear-map
 * address, which every page has as the driver does not build with HIGHMEM.
 */
dma_addr_t virtio_media_map_page(struct virtqueue *vq, struct page *page, size_t offset,
				 size_t len, enum dma_data_direction dir)
{
	return virtqueue_map_single_attrs(vq, page_address(page) + offset, len, dir, 0);
}

/* Maps driver pages into a VMA; each mapped page holds its own reference. */
int virtio_media_vma_map_pages(struct vm_area_struct *vma, struct page **pages, unsigned long count)
{
	vm_flags_set(vma, VM_DONTEXPAND | VM_DONTDUMP);
	virtio_media_vma_keep_readonly(vma);
	return vm_map_pages_zero(vma, pages, count);
}

/*
 * The device dma-bufs are attached to: the virtqueue's DMA device when the
 * transport uses the DMA API; otherwise the device wants guest physical
 * addresses, which is what its parent maps to when no IOMMU sits in front
 * of it. NULL when neither holds.
 */
struct device *virtio_media_dmabuf_device(struct virtqueue *vq)
{
	struct device *dev = virtqueue_dma_dev(vq);

	if (dev)
		return dev;
	dev = vq->vdev->dev.parent;
	if (!dev || device_iommu_mapped(dev))
		return NULL;
	return dev;
}

/*
 * EXPBUF of guest-backed MMAP buffers: a dma-buf over the plane's pages.
 * The dma-buf holds its own page references, so it outlives the buffer
 * (REQBUFS(0), close) safely, as vb2's exported buffers do.
 */
struct virtio_media_export {
	struct page **pages;
	unsigned long count;
};

static struct sg_table *virtio_media_export_map(struct dma_buf_attachment *attach,
						enum dma_data_direction dir)
{
	struct virtio_media_export *exp = attach->dmabuf->priv;
	struct sg_table *sgt = kzalloc_obj(*sgt);
	int ret;

	if (!sgt)
		return ERR_PTR(-ENOMEM);
	ret = sg_alloc_table_from_pages(sgt, exp->pages, exp->count, 0,
					exp->count << PAGE_SHIFT, GFP_KERNEL);
	if (ret)
		goto free;
	ret = dma_map_sgtable(attach->dev, sgt, dir, 0);
	if (ret) {
		sg_free_table(sgt);
		goto free;
	}
	return sgt;
free:
	kfree(sgt);
	return ERR_PTR(ret);
}

static void virtio_media_export_unmap(struct dma_buf_attachment *attach, struct sg_table *sgt,
				      enum dma_data_direction dir)
{
	dma_unmap_sgtable(attach->dev, sgt, dir, 0);
	sg_free_table(sgt);
	kfree(sgt);
}

static int virtio_media_export_mmap(struct dma_buf *buf, struct vm_area_struct *vma)
{
	struct virtio_media_export *exp = buf->priv;

	return vm_map_pages(vma, exp->pages, exp->count);
}

static void virtio_media_export_release_pages(struct virtio_media_export *exp)
{
	unsigned long i;

	for (i = 0; i < exp->count; i++)
		put_page(exp->pages[i]);
	kvfree(exp->pages);
	kfree(exp);
}

static void virtio_media_export_release(struct dma_buf *buf)
{
	virtio_media_export_release_pages(buf->priv);
}

static const struct dma_buf_ops virtio_media_export_ops = {
	.map_dma_buf = virtio_media_export_map,
	.unmap_dma_buf = virtio_media_export_unmap,
	.mmap = virtio_media_export_mmap,
	.release = virtio_media_export_release,
};

/* Exports @count pages as a dma-buf; returns its fd or an errno. */
int virtio_media_export_pages(struct page *const *pages, unsigned long count, unsigned int flags)
{
	DEFINE_DMA_BUF_EXPORT_INFO(info);
	struct virtio_media_export *exp;
	struct dma_buf *buf;
	unsigned long i;
	int fd;

	if (!count)
		return -EINVAL;
	exp = kzalloc_obj(*exp);
	if (!exp)
		return -ENOMEM;
	exp->pages = kvmalloc_array(count, sizeof(*exp->pages), GFP_KERNEL);
	if (!exp->pages) {
		kfree(exp);
		return -ENOMEM;
	}
	for (i = 0; i < count; i++) {
		exp->pages[i] = pages[i];
		get_page(pages[i]);
	}
	exp->count = count;
	info.ops = &virtio_media_export_ops;
	info.size = count << PAGE_SHIFT;
	info.flags = O_RDWR;
	info.priv = exp;
	buf = dma_buf_export(&info);
	if (IS_ERR(buf)) {
		virtio_media_export_release_pages(exp);
		return PTR_ERR(buf);
	}
	fd = dma_buf_fd(buf, flags & O_CLOEXEC);
	if (fd < 0)
		dma_buf_put(buf); /* releases exp */
	return fd;
}
