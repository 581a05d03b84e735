/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What the m2m order test programs share (m2m-poll-pairs.c,
 * m2m-eos-order.c): one device opened non-blocking, two MMAP buffers on
 * each of its multiplanar queues.
 */
#ifndef M2M_LIB_H
#define M2M_LIB_H

#include <errno.h>
#include <fcntl.h>
#include <linux/videodev2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define OUT V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE
#define CAP V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE

static int fd;
static const char *prog;
/* Planes per buffer: [0] CAPTURE, [1] OUTPUT. */
static unsigned int nplanes[2];

/* The ioctl, restarted after a signal: 0 or an errno. */
static int xioctl(unsigned long req, void *arg)
{
	int r;

	do
		r = ioctl(fd, req, arg);
	while (r < 0 && errno == EINTR);
	return r < 0 ? errno : 0;
}

static void die(const char *what, int err)
{
	fprintf(stderr, "%s: %s: %s\n", prog, what, strerror(err));
	exit(2);
}

/* Opens DEVICE and gives both queues two MMAP buffers; dies on failure. */
static void m2m_open(const char *name, const char *device)
{
	unsigned int types[2] = { CAP, OUT };

	prog = name;
	fd = open(device, O_RDWR | O_NONBLOCK);
	if (fd < 0)
		die("open", errno);
	for (int i = 0; i < 2; i++) {
		struct v4l2_format f = { .type = types[i] };
		struct v4l2_requestbuffers rb = { .count = 2, .type = types[i], .memory = V4L2_MEMORY_MMAP };
		int r = xioctl(VIDIOC_G_FMT, &f);

		if (r)
			die("G_FMT", r);
		nplanes[i] = f.fmt.pix_mp.num_planes;
		r = xioctl(VIDIOC_REQBUFS, &rb);
		if (r || rb.count != 2)
			die("REQBUFS", r ? r : EINVAL);
	}
}

/* QBUF of MMAP buffer INDEX; an OUTPUT buffer holds a whole frame. */
static int qbuf(unsigned int type, unsigned int index)
{
	struct v4l2_plane planes[VIDEO_MAX_PLANES];
	struct v4l2_buffer b;

	memset(&b, 0, sizeof(b));
	memset(planes, 0, sizeof(planes));
	b.type = type;
	b.memory = V4L2_MEMORY_MMAP;
	b.index = index;
	b.m.planes = planes;
	b.length = nplanes[type == OUT];
	if (type == OUT) {
		/* The plane lengths QUERYBUF gives. */
		struct v4l2_buffer q = b;
		int r = xioctl(VIDIOC_QUERYBUF, &q);

		if (r)
			return r;
		for (unsigned int p = 0; p < b.length; p++)
			planes[p].bytesused = planes[p].length;
	}
	return xioctl(VIDIOC_QBUF, &b);
}

/* DQBUF: 0 with the buffer's index and flags (either pointer may be
 * NULL), or an errno. */
static int dqbuf(unsigned int type, unsigned int *index, unsigned int *flags)
{
	struct v4l2_plane planes[VIDEO_MAX_PLANES];
	struct v4l2_buffer b;
	int r;

	memset(&b, 0, sizeof(b));
	b.type = type;
	b.memory = V4L2_MEMORY_MMAP;
	b.m.planes = planes;
	b.length = VIDEO_MAX_PLANES;
	r = xioctl(VIDIOC_DQBUF, &b);
	if (!r && index)
		*index = b.index;
	if (!r && flags)
		*flags = b.flags;
	return r;
}

#endif
