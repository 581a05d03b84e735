// SPDX-License-Identifier: GPL-2.0
//
// m2m-eos-order DEVICE STREAMS
//
// A drain on the test device's m2m backend, STREAMS times: one conversion,
// then DECODER_CMD STOP with no OUTPUT buffer left, so the device returns
// the second CAPTURE buffer empty with LAST and then sends V4L2_EVENT_EOS,
// in that order. A program may see the LAST buffer before the EOS event,
// but must never see the event before the buffer the device returned
// first: FFmpeg's v4l2m2m decoders stop at EOS unless poll() also says a
// buffer is ready, and lose the frames still waiting. After each EOS the
// program tries a non-blocking DQBUF at once; EAGAIN there is a wrong
// order. Exit status 1 if there was one.
#include <errno.h>
#include <fcntl.h>
#include <linux/videodev2.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define OUT V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE
#define CAP V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE

static int fd;
static unsigned int nplanes[2];

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
	fprintf(stderr, "m2m-eos-order: %s: %s\n", what, strerror(err));
	exit(2);
}

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
		// A whole source frame: the length QUERYBUF gives.
		struct v4l2_buffer q = b;

		if (xioctl(VIDIOC_QUERYBUF, &q))
			die("QUERYBUF", errno);
		for (unsigned int p = 0; p < b.length; p++)
			planes[p].bytesused = planes[p].length;
	}
	return xioctl(VIDIOC_QBUF, &b);
}

// DQBUF of `type`: 0 and the buffer's flags, or an errno.
static int dqbuf(unsigned int type, unsigned int *flags)
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
	if (!r && flags)
		*flags = b.flags;
	return r;
}

static short wait_for(short events)
{
	struct pollfd p = { .fd = fd, .events = events };
	int n = poll(&p, 1, 2000);

	if (n <= 0)
		die("poll (timeout or error)", n ? errno : ETIMEDOUT);
	return p.revents;
}

static int got_eos(void)
{
	struct v4l2_event ev;

	while (!xioctl(VIDIOC_DQEVENT, &ev))
		if (ev.type == V4L2_EVENT_EOS)
			return 1;
	return 0;
}

int main(int argc, char **argv)
{
	unsigned long wrong = 0, eos_first = 0, last_first = 0;
	unsigned int types[2] = { CAP, OUT };

	if (argc < 3) {
		fprintf(stderr, "usage: %s DEVICE STREAMS\n", argv[0]);
		return 2;
	}
	int streams = atoi(argv[2]);

	fd = open(argv[1], O_RDWR | O_NONBLOCK);
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
	struct v4l2_event_subscription sub = { .type = V4L2_EVENT_EOS };

	if (xioctl(VIDIOC_SUBSCRIBE_EVENT, &sub))
		die("SUBSCRIBE_EVENT EOS", errno);
	for (int s = 0; s < streams; s++) {
		unsigned int flags = 0;
		int r, t;

		if ((r = qbuf(CAP, 0)) || (r = qbuf(CAP, 1)))
			die("QBUF capture", r);
		t = OUT;
		if ((r = xioctl(VIDIOC_STREAMON, &t)))
			die("STREAMON output", r);
		t = CAP;
		if ((r = xioctl(VIDIOC_STREAMON, &t)))
			die("STREAMON capture", r);
		// One conversion: OUTPUT 0 into CAPTURE 0.
		if ((r = qbuf(OUT, 0)))
			die("QBUF output", r);
		while ((r = dqbuf(CAP, &flags)) == EAGAIN)
			wait_for(POLLIN);
		if (r)
			die("DQBUF capture", r);
		while ((r = dqbuf(OUT, NULL)) == EAGAIN)
			wait_for(POLLOUT);
		if (r)
			die("DQBUF output", r);
		// Drain with nothing left: LAST on CAPTURE 1, then EOS.
		struct v4l2_decoder_cmd cmd = { .cmd = V4L2_DEC_CMD_STOP };

		if ((r = xioctl(VIDIOC_DECODER_CMD, &cmd)))
			die("DECODER_CMD STOP", r);
		int have_eos = 0, have_last = 0;

		while (!have_eos || !have_last) {
			short revents = wait_for(POLLIN | POLLPRI);

			if (!have_eos && (revents & POLLPRI) && got_eos()) {
				have_eos = 1;
				if (!have_last) {
					eos_first++;
					// The LAST buffer came before the event: it
					// must be there now.
					r = dqbuf(CAP, &flags);
					if (r == EAGAIN)
						wrong++;
					else if (r)
						die("DQBUF capture after EOS", r);
					else
						have_last = 1;
				}
			}
			if (!have_last && (revents & POLLIN)) {
				r = dqbuf(CAP, &flags);
				if (r && r != EAGAIN)
					die("DQBUF capture", r);
				if (!r) {
					have_last = 1;
					last_first += !have_eos;
				}
			}
		}
		if (!(flags & V4L2_BUF_FLAG_LAST))
			die("the drain's buffer has no LAST flag", EINVAL);
		t = OUT;
		if ((r = xioctl(VIDIOC_STREAMOFF, &t)))
			die("STREAMOFF output", r);
		t = CAP;
		if ((r = xioctl(VIDIOC_STREAMOFF, &t)))
			die("STREAMOFF capture", r);
	}
	printf("RESULT streams %d eos-seen-first %lu last-seen-first %lu eos-before-its-buffer %lu\n", streams,
	       eos_first, last_first, wrong);
	return wrong ? 1 : 0;
}
