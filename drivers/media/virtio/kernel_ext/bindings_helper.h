/* SPDX-License-Identifier: GPL-2.0 */
/* The C headers the driver's bindings are generated from. */
#include <linux/virtio.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>
#include <media/v4l2-dev.h>
#include <media/v4l2-device.h>
#include <media/v4l2-event.h>
#include <media/v4l2-fh.h>
#include <media/v4l2-ioctl.h>
#include <uapi/linux/virtio_media.h>
#include "helpers.h"
