/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * virtio-media wire protocol: the V4L2 UAPI carried over virtio.
 * See the virtio-media specification (Device Types / Media Device).
 * All fields are little-endian; ioctl payloads use the 64-bit layout of the
 * V4L2 structures whatever the guest's word size.
 */
#ifndef _UAPI_LINUX_VIRTIO_MEDIA_H
#define _UAPI_LINUX_VIRTIO_MEDIA_H

#include <linux/types.h>

/* The protocol draft's device ID; the virtio spec assigns 48 (VIRTIO_ID_MEDIA). */
#define VIRTIO_ID_MEDIA_DRAFT		42
#define VIRTIO_ID_MEDIA_SPEC		48

#define VIRTIO_MEDIA_COMMANDQ		0
#define VIRTIO_MEDIA_EVENTQ		1

/* Shared-memory region holding MMAP buffers. */
#define VIRTIO_MEDIA_SHM_MMAP		0

struct virtio_media_config {
	__le32 device_caps;
	__le32 device_type;
	__u8 card[32];
};

#define VIRTIO_MEDIA_CMD_OPEN		1
#define VIRTIO_MEDIA_CMD_CLOSE		2
#define VIRTIO_MEDIA_CMD_IOCTL		3
#define VIRTIO_MEDIA_CMD_MMAP		4
#define VIRTIO_MEDIA_CMD_MUNMAP		5

struct virtio_media_cmd_header {
	__le32 cmd;
	__le32 __padding;
};

struct virtio_media_resp_header {
	__le32 status;
	__le32 __padding;
};

struct virtio_media_cmd_open {
	struct virtio_media_cmd_header hdr;
};

struct virtio_media_resp_open {
	struct virtio_media_resp_header hdr;
	__le32 session_id;
	__le32 __padding;
};

struct virtio_media_cmd_close {
	struct virtio_media_cmd_header hdr;
	__le32 session_id;
	__le32 __padding;
};

struct virtio_media_cmd_ioctl {
	struct virtio_media_cmd_header hdr;
	__le32 session_id;
	__le32 code;
	/* Followed by the ioctl payload. */
};

struct virtio_media_resp_ioctl {
	struct virtio_media_resp_header hdr;
	/* Followed by the ioctl payload. */
};

/* Describes guest memory behind a USERPTR buffer or a control's ptr. */
struct virtio_media_sg_entry {
	__le64 start;
	__le32 len;
	__le32 __padding;
};

#define VIRTIO_MEDIA_MMAP_FLAG_RW	(1 << 0)

struct virtio_media_cmd_mmap {
	struct virtio_media_cmd_header hdr;
	__le32 session_id;
	__le32 flags;
	__le64 offset;
};

struct virtio_media_resp_mmap {
	struct virtio_media_resp_header hdr;
	__le64 addr;
	__le64 len;
};

struct virtio_media_cmd_munmap {
	struct virtio_media_cmd_header hdr;
	__le64 guest_addr;
};

struct virtio_media_resp_munmap {
	struct virtio_media_resp_header hdr;
};

#define VIRTIO_MEDIA_EVT_ERROR		0
#define VIRTIO_MEDIA_EVT_DQBUF		1
#define VIRTIO_MEDIA_EVT_EVENT		2

struct virtio_media_event_header {
	__le32 event;
	__le32 session_id;
};

struct virtio_media_event_error {
	struct virtio_media_event_header hdr;
	__le32 errno;
	__le32 __padding;
};

/*
 * DQBUF and EVENT carry struct v4l2_buffer + VIDEO_MAX_PLANES struct
 * v4l2_plane, or struct v4l2_event, in their 64-bit layout after the header.
 * They are not declared here so this header does not depend on videodev2.h.
 */

#endif /* _UAPI_LINUX_VIRTIO_MEDIA_H */
