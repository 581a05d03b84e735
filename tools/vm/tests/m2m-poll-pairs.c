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
#include <sys/epoll.h>
#include <sys/select.h>

#include "m2m-lib.h"

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: %s DEVICE STREAMS epoll|select\n", argv[0]);
		return 2;
	}
	int streams = atoi(argv[2]);
	int use_epoll = !strcmp(argv[3], "epoll");
	m2m_open("m2m-poll-pairs", argv[1]);
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
			r = dqbuf(OUT, &idx, NULL);
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
			do r = dqbuf(CAP, &idx, NULL); while (r == EAGAIN);
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
