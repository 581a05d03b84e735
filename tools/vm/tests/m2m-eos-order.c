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
#include <poll.h>

#include "m2m-lib.h"

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

	if (argc < 3) {
		fprintf(stderr, "usage: %s DEVICE STREAMS\n", argv[0]);
		return 2;
	}
	int streams = atoi(argv[2]);

	m2m_open("m2m-eos-order", argv[1]);
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
		while ((r = dqbuf(CAP, NULL, &flags)) == EAGAIN)
			wait_for(POLLIN);
		if (r)
			die("DQBUF capture", r);
		while ((r = dqbuf(OUT, NULL, NULL)) == EAGAIN)
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
					r = dqbuf(CAP, NULL, &flags);
					if (r == EAGAIN)
						wrong++;
					else if (r)
						die("DQBUF capture after EOS", r);
					else
						have_last = 1;
				}
			}
			if (!have_last && (revents & POLLIN)) {
				r = dqbuf(CAP, NULL, &flags);
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
