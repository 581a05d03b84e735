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
