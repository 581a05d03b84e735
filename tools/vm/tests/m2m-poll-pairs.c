// SPDX-License-Identifier: GPL-2.0
//
// m2m-poll-pairs DEVICE STREAMS epoll|select
//
// Replays the mem2mem part of v4l2-compliance 1.32's captureBufs() loop
// (2 OUTPUT + 2 CAPTURE MMAP buffers, frame_count 60, so 58 OUTPUT
// dequeues) STREAMS times. Each wake-up dequeues at most one OUTPUT buffer
// (count--) and, only if the fd was readable, one CAPTURE buffer, after
// which the stream ends when count is 0. If an OUTPUT buffer is dequeued
// while count is already 0, v4l2-compliance's unsigned count wraps and its
// stream never ends (its "Frame #" then runs past 60 until the guest times
// out). That happens when the OUTPUT half of a conversion can be seen by
// poll() without its CAPTURE half. The program counts such wraps (and ends
// the stream there instead of looping), and the wake-ups that were
// writable but not readable. The test device converts a job's OUTPUT
// buffer into its CAPTURE buffer at once, so such a wake-up means poll()
// showed half a job: exit status 1 if there was one, or a stream wrapped.
#include <errno.h>
#include <fcntl.h>
#include <linux/videodev2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/select.h>
#include <unistd.h>

static int fd;
static unsigned nplanes[2];

static int xioctl(unsigned long req, void *arg)
{
	int r;
	do r = ioctl(fd, req, arg); while (r < 0 && errno == EINTR);
	return r < 0 ? errno : 0;
}

static void die(const char *what, int err)
{
	fprintf(stderr, "m2m-poll-pairs: %s: %s\n", what, strerror(err));
	exit(2);
}

static int qbuf(unsigned type, unsigned index)
{
	struct v4l2_plane planes[VIDEO_MAX_PLANES];
	struct v4l2_buffer b;
	memset(&b, 0, sizeof(b));
	memset(planes, 0, sizeof(planes));
	b.type = type;
	b.memory = V4L2_MEMORY_MMAP;
	b.index = index;
	b.m.planes = planes;
	b.length = nplanes[type == V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE];
	return xioctl(VIDIOC_QBUF, &b);
}

static int dqbuf(unsigned type, unsigned *index)
{
	struct v4l2_plane planes[VIDEO_MAX_PLANES];
	struct v4l2_buffer b;
	memset(&b, 0, sizeof(b));
	b.type = type;
	b.memory = V4L2_MEMORY_MMAP;
	b.m.planes = planes;
	b.length = VIDEO_MAX_PLANES;
	int r = xioctl(VIDIOC_DQBUF, &b);
	if (!r)
		*index = b.index;
	return r;
}

int main(int argc, char **argv)
{
	const unsigned OUT = V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE, CAP = V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE;
	if (argc < 4) {
		fprintf(stderr, "usage: %s DEVICE STREAMS epoll|select\n", argv[0]);
		return 2;
	}
	int streams = atoi(argv[2]);
	int use_epoll = !strcmp(argv[3], "epoll");
	fd = open(argv[1], O_RDWR | O_NONBLOCK);
	if (fd < 0)
		die("open", errno);
	unsigned types[2] = { CAP, OUT };
	for (int i = 0; i < 2; i++) {
		struct v4l2_format f;
		memset(&f, 0, sizeof(f));
		f.type = types[i];
		int r = xioctl(VIDIOC_G_FMT, &f);
		if (r)
			die("G_FMT", r);
		nplanes[i] = f.fmt.pix_mp.num_planes;
		struct v4l2_requestbuffers rb;
		memset(&rb, 0, sizeof(rb));
		rb.count = 2;
		rb.type = types[i];
		rb.memory = V4L2_MEMORY_MMAP;
		r = xioctl(VIDIOC_REQBUFS, &rb);
		if (r || rb.count != 2)
			die("REQBUFS", r ? r : EINVAL);
	}
	int epfd = epoll_create1(0);
	struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLPRI, .data.fd = fd };
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev))
		die("epoll_ctl", errno);
	unsigned long wraps = 0, out_only = 0, wakeups = 0, outs = 0, caps = 0, max_ahead = 0;
	for (int s = 0; s < streams; s++) {
		for (int i = 0; i < 2; i++) {
			int r;
			if ((r = qbuf(OUT, i)) || (r = qbuf(CAP, i)))
				die("QBUF", r);
		}
		int t = OUT, r;
		if ((r = xioctl(VIDIOC_STREAMON, &t)))
			die("STREAMON out", r);
		t = CAP;
		if ((r = xioctl(VIDIOC_STREAMON, &t)))
			die("STREAMON cap", r);
		unsigned count = 58; // frame_count 60 - 2 OUTPUT buffers
		long o = 0, c = 0;
		for (;;) {
			int can_read, can_write;
			if (use_epoll) {
				struct epoll_event got;
				int n = epoll_wait(epfd, &got, 1, 2000);
				if (n <= 0)
					die("epoll_wait (timeout or error)", n ? errno : ETIMEDOUT);
				can_read = !!(got.events & EPOLLIN);
				can_write = !!(got.events & EPOLLOUT);
			} else {
				fd_set rfds, wfds;
				struct timeval tv = { 2, 0 };
				FD_ZERO(&rfds);
				FD_SET(fd, &rfds);
				FD_ZERO(&wfds);
				FD_SET(fd, &wfds);
				int n = select(fd + 1, &rfds, &wfds, NULL, &tv);
				if (n <= 0)
					die("select (timeout or error)", n ? errno : ETIMEDOUT);
				can_read = FD_ISSET(fd, &rfds);
				can_write = FD_ISSET(fd, &wfds);
			}
			wakeups++;
			if (can_write && !can_read)
				out_only++;
			unsigned idx;
			r = dqbuf(OUT, &idx);
			if (r != EAGAIN) {
				if (r)
					die("DQBUF out", r);
				if (count == 0) {
					// v4l2-compliance: count-- wraps to UINT_MAX here
					// and the stream never ends.
					wraps++;
					break;
				}
				o++;
				outs++;
				if ((r = qbuf(OUT, idx)))
					die("QBUF out", r);
				count--;
			}
			if (!can_read)
				continue;
			do r = dqbuf(CAP, &idx); while (r == EAGAIN);
			if (r)
				die("DQBUF cap", r);
			c++;
			caps++;
			if (o - c > 0 && (unsigned long)(o - c) > max_ahead)
				max_ahead = o - c;
			if (!count)
				break;
			if ((r = qbuf(CAP, idx)))
				die("QBUF cap", r);
		}
		t = OUT;
		if ((r = xioctl(VIDIOC_STREAMOFF, &t)))
			die("STREAMOFF out", r);
		t = CAP;
		if ((r = xioctl(VIDIOC_STREAMOFF, &t)))
			die("STREAMOFF cap", r);
	}
	printf("RESULT %s streams %d wraps %lu wakeups %lu writable-not-readable %lu outputs %lu captures %lu max-outputs-ahead %lu\n",
	       argv[3], streams, wraps, wakeups, out_only, outs, caps, max_ahead);
	return wraps || out_only ? 1 : 0;
}
