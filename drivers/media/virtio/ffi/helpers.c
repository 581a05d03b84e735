// SPDX-License-Identifier: GPL-2.0
#include <linux/module.h>
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

void virtio_media_device_ready(struct virtio_device *vdev)
{
	virtio_device_ready(vdev);
}
