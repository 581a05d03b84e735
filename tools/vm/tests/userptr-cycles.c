// SPDX-License-Identifier: GPL-2.0
/*
 * USERPTR life cycles on a capture node: N times REQBUFS(4) / QBUF all /
 * STREAMON / DQBUF one / STREAMOFF / REQBUFS(0). Each cycle leaves buffers
 * with the device at STREAMOFF and takes one back through DQBUF, so both
 * ways the driver releases pinned pages are used.
 *
 *   userptr-cycles DEVICE CYCLES
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/videodev2.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define BUFFERS 4

static int xioctl(int fd, unsigned long request, void *arg, const char *name)
{
	int ret;

	do
		ret = ioctl(fd, request, arg);
	while (ret < 0 && errno == EINTR);
	if (ret < 0)
		fprintf(stderr, "userptr-cycles: %s: %s\n", name, strerror(errno));
	return ret;
}

int main(int argc, char **argv)
{
	struct v4l2_plane planes[VIDEO_MAX_PLANES];
	void *memory[BUFFERS][VIDEO_MAX_PLANES];
	unsigned int plane_size[VIDEO_MAX_PLANES];
	struct v4l2_capability cap = { 0 };
	struct v4l2_format fmt = { 0 };
	unsigned int num_planes = 1, type;
	long cycles, cycle;
	int fd, mplane;

	if (argc != 3) {
		fprintf(stderr, "usage: %s DEVICE CYCLES\n", argv[0]);
		return 2;
	}
	cycles = strtol(argv[2], NULL, 0);
	fd = open(argv[1], O_RDWR);
	if (fd < 0 || xioctl(fd, VIDIOC_QUERYCAP, &cap, "QUERYCAP") < 0)
		return 1;
	mplane = !!(cap.device_caps & V4L2_CAP_VIDEO_CAPTURE_MPLANE);
	type = mplane ? V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE : V4L2_BUF_TYPE_VIDEO_CAPTURE;
	fmt.type = type;
	if (xioctl(fd, VIDIOC_G_FMT, &fmt, "G_FMT") < 0)
		return 1;
	if (mplane) {
		num_planes = fmt.fmt.pix_mp.num_planes;
		for (unsigned int p = 0; p < num_planes; p++)
			plane_size[p] = fmt.fmt.pix_mp.plane_fmt[p].sizeimage;
	} else {
		plane_size[0] = fmt.fmt.pix.sizeimage;
	}
	for (int b = 0; b < BUFFERS; b++)
		for (unsigned int p = 0; p < num_planes; p++)
			if (posix_memalign(&memory[b][p], 4096, plane_size[p]))
				return 1;

	for (cycle = 0; cycle < cycles; cycle++) {
		struct v4l2_requestbuffers req = {
			.count = BUFFERS, .type = type, .memory = V4L2_MEMORY_USERPTR,
		};
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		struct v4l2_buffer buf;

		if (xioctl(fd, VIDIOC_REQBUFS, &req, "REQBUFS") < 0 || req.count < 1)
			return 1;
		for (unsigned int b = 0; b < req.count && b < BUFFERS; b++) {
			memset(&buf, 0, sizeof(buf));
			buf.type = type;
			buf.memory = V4L2_MEMORY_USERPTR;
			buf.index = b;
			if (mplane) {
				memset(planes, 0, sizeof(planes));
				for (unsigned int p = 0; p < num_planes; p++) {
					planes[p].m.userptr = (unsigned long)memory[b][p];
					planes[p].length = plane_size[p];
				}
				buf.m.planes = planes;
				buf.length = num_planes;
			} else {
				buf.m.userptr = (unsigned long)memory[b][0];
				buf.length = plane_size[0];
			}
			if (xioctl(fd, VIDIOC_QBUF, &buf, "QBUF") < 0)
				return 1;
		}
		if (xioctl(fd, VIDIOC_STREAMON, &type, "STREAMON") < 0)
			return 1;
		if (poll(&pfd, 1, 5000) != 1) {
			fprintf(stderr, "userptr-cycles: no buffer within 5 s in cycle %ld\n", cycle);
			return 1;
		}
		memset(&buf, 0, sizeof(buf));
		buf.type = type;
		buf.memory = V4L2_MEMORY_USERPTR;
		if (mplane) {
			buf.m.planes = planes;
			buf.length = VIDEO_MAX_PLANES;
		}
		if (xioctl(fd, VIDIOC_DQBUF, &buf, "DQBUF") < 0)
			return 1;
		if ((mplane ? planes[0].m.userptr : buf.m.userptr) != (unsigned long)memory[buf.index % BUFFERS][0]) {
			fprintf(stderr, "userptr-cycles: DQBUF returned a foreign pointer\n");
			return 1;
		}
		if (xioctl(fd, VIDIOC_STREAMOFF, &type, "STREAMOFF") < 0)
			return 1;
		req.count = 0;
		if (xioctl(fd, VIDIOC_REQBUFS, &req, "REQBUFS(0)") < 0)
			return 1;
	}
	printf("userptr-cycles: %ld cycles of %d buffers, %u planes each\n", cycles, BUFFERS, num_planes);
	return 0;
}
