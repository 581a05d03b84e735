// SPDX-License-Identifier: GPL-2.0
/*
 * Programs that provoke what a driver must survive: races between threads
 * of one file, signals in the middle of commands, mappings that outlive the
 * device, sizes chosen to exhaust memory. Each subcommand prints what it
 * saw and "PASS: ..." or "FAIL: ..."; its exit status is 0 on PASS.
 *
 *   hardening qbuf-race DEVICE SECONDS
 *   hardening open-close DEVICE COUNT
 *   hardening mmap-unbind DEVICE GO-FILE
 *   hardening mprotect DEVICE
 *   hardening signals DEVICE COUNT
 *   hardening stall DEVICE THREADS
 *   hardening killed-close DEVICE
 *   hardening big-controls DEVICE
 *   hardening reqbufs DEVICE COUNT MEMORY EXPECTED-ERRNO
 *   hardening dup-session DEVICE
 *   hardening error-pins DEVICE
 *   hardening close-pins DEVICE
 *   hardening stream-once DEVICE FRAMES
 *   hardening flood-ioctls DEVICE SECONDS
 *   hardening kernel-status DEVICE
 *   hardening bytesused DEVICE FRAMES
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/videodev2.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BUFFERS 4

static const char *dev_path;

static int fail(const char *what)
{
	printf("FAIL: %s\n", what);
	return 1;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The capture format of a node: buffer type, planes and their sizes. */
struct stream {
	int fd;
	unsigned int type, planes;
	unsigned int size[VIDEO_MAX_PLANES];
};

static int open_stream(struct stream *s, int flags)
{
	struct v4l2_capability cap = { 0 };
	struct v4l2_format fmt = { 0 };

	s->fd = open(dev_path, O_RDWR | flags);
	if (s->fd < 0)
		return -1;
	if (ioctl(s->fd, VIDIOC_QUERYCAP, &cap) < 0)
		return -1;
	s->type = cap.device_caps & V4L2_CAP_VIDEO_CAPTURE_MPLANE ? V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE :
								    V4L2_BUF_TYPE_VIDEO_CAPTURE;
	fmt.type = s->type;
	if (ioctl(s->fd, VIDIOC_G_FMT, &fmt) < 0)
		return -1;
	if (s->type == V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE) {
		s->planes = fmt.fmt.pix_mp.num_planes;
		for (unsigned int p = 0; p < s->planes && p < VIDEO_MAX_PLANES; p++)
			s->size[p] = fmt.fmt.pix_mp.plane_fmt[p].sizeimage;
	} else {
		s->planes = 1;
		s->size[0] = fmt.fmt.pix.sizeimage;
	}
	return 0;
}

static int reqbufs(struct stream *s, unsigned int count, unsigned int memory)
{
	struct v4l2_requestbuffers req = { .count = count, .type = s->type, .memory = memory };

	return ioctl(s->fd, VIDIOC_REQBUFS, &req) < 0 ? -1 : (int)req.count;
}

static int qbuf_userptr(struct stream *s, unsigned int index, void *mem[])
{
	struct v4l2_plane planes[VIDEO_MAX_PLANES] = { 0 };
	struct v4l2_buffer buf = { .index = index, .type = s->type, .memory = V4L2_MEMORY_USERPTR };

	if (s->type == V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE) {
		for (unsigned int p = 0; p < s->planes; p++) {
			planes[p].m.userptr = (unsigned long)mem[p];
			planes[p].length = s->size[p];
		}
		buf.m.planes = planes;
		buf.length = s->planes;
	} else {
		buf.m.userptr = (unsigned long)mem[0];
		buf.length = s->size[0];
	}
	return ioctl(s->fd, VIDIOC_QBUF, &buf);
}

static int qbuf_mmap(struct stream *s, unsigned int index)
{
	struct v4l2_plane planes[VIDEO_MAX_PLANES] = { 0 };
	struct v4l2_buffer buf = { .index = index, .type = s->type, .memory = V4L2_MEMORY_MMAP };

	if (s->type == V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE) {
		buf.m.planes = planes;
		buf.length = s->planes;
	}
	return ioctl(s->fd, VIDIOC_QBUF, &buf);
}

/* DQBUF; returns the index, or -1 with errno. */
static int dqbuf(struct stream *s, unsigned int memory, unsigned int *sequence)
{
	struct v4l2_plane planes[VIDEO_MAX_PLANES] = { 0 };
	struct v4l2_buffer buf = { .type = s->type, .memory = memory };

	if (s->type == V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE) {
		buf.m.planes = planes;
		buf.length = VIDEO_MAX_PLANES;
	}
	if (ioctl(s->fd, VIDIOC_DQBUF, &buf) < 0)
		return -1;
	if (sequence)
		*sequence = buf.sequence;
	return buf.index;
}

static int stream_on(struct stream *s, unsigned long request)
{
	int type = s->type;

	return ioctl(s->fd, request, &type);
}

/*
 * QBUF of USERPTR buffers from one thread while another stops, frees,
 * reallocates and restarts the queue: STREAMOFF/REQBUFS must never release
 * pages a QBUF is handing to the device (the driver refuses, and logs, a
 * returned buffer whose pages it does not hold: the test script reads the
 * log).
 */
struct race {
	struct stream s;
	void *mem[BUFFERS][VIDEO_MAX_PLANES];
	volatile int stop;
	long qbufs, dqbufs, cycles;
};

static void *race_qbuf(void *arg)
{
	struct race *r = arg;

	while (!r->stop) {
		for (unsigned int b = 0; b < BUFFERS && !r->stop; b++)
			if (qbuf_userptr(&r->s, b, r->mem[b]) == 0)
				r->qbufs++;
		while (dqbuf(&r->s, V4L2_MEMORY_USERPTR, NULL) >= 0)
			r->dqbufs++;
	}
	return NULL;
}

static int qbuf_race(int seconds)
{
	struct race r = { 0 };
	pthread_t thread;
	double end;

	if (open_stream(&r.s, O_NONBLOCK) < 0)
		return fail("open");
	for (int b = 0; b < BUFFERS; b++)
		for (unsigned int p = 0; p < r.s.planes; p++)
			if (posix_memalign(&r.mem[b][p], 4096, r.s.size[p]))
				return fail("memory");
	if (reqbufs(&r.s, BUFFERS, V4L2_MEMORY_USERPTR) < BUFFERS)
		return fail("REQBUFS USERPTR");
	stream_on(&r.s, VIDIOC_STREAMON);
	pthread_create(&thread, NULL, race_qbuf, &r);
	end = now() + seconds;
	while (now() < end) {
		stream_on(&r.s, VIDIOC_STREAMOFF);
		reqbufs(&r.s, 0, V4L2_MEMORY_USERPTR);
		reqbufs(&r.s, BUFFERS, V4L2_MEMORY_USERPTR);
		stream_on(&r.s, VIDIOC_STREAMON);
		/* Let frames come back into the queued buffers. */
		usleep(3000);
		r.cycles++;
	}
	r.stop = 1;
	pthread_join(thread, NULL);
	stream_on(&r.s, VIDIOC_STREAMOFF);
	close(r.s.fd);
	printf("qbuf-race: %ld QBUFs, %ld DQBUFs, %ld STREAMOFF/REQBUFS cycles\n", r.qbufs, r.dqbufs,
	       r.cycles);
	if (r.dqbufs < 10 || r.cycles < 10)
		return fail("too few buffers came back or too few cycles ran");
	printf("PASS: the race ran (the log decides)\n");
	return 0;
}

/* Opens and closes, subscribed to events, while the device floods them. */
static int open_close(long count)
{
	struct v4l2_event_subscription sub = { .type = V4L2_EVENT_SOURCE_CHANGE };
	long opened = 0;
	pid_t child = fork();

	for (long i = 0; i < count; i++) {
		int fd = open(dev_path, O_RDWR);

		if (fd < 0)
			continue;
		opened++;
		ioctl(fd, VIDIOC_SUBSCRIBE_EVENT, &sub);
		close(fd);
	}
	if (child == 0)
		exit(opened > 0 ? 0 : 1);
	int status = 1;

	waitpid(child, &status, 0);
	printf("open-close: %ld opens here, child %s\n", opened,
	       WIFEXITED(status) && !WEXITSTATUS(status) ? "ok" : "failed");
	if (opened < count / 2 || !WIFEXITED(status) || WEXITSTATUS(status))
		return fail("too few opens");
	printf("PASS: %ld open/subscribe/close cycles in two processes\n", 2 * count);
	return 0;
}

static sigjmp_buf fault_jump;

static void on_fault(int sig)
{
	siglongjmp(fault_jump, sig);
}

/* Touches `p`; returns the signal it raised, or 0. */
static int touch(volatile unsigned char *p)
{
	struct sigaction sa = { .sa_handler = on_fault }, old_bus, old_segv;
	int sig;

	sigaction(SIGBUS, &sa, &old_bus);
	sigaction(SIGSEGV, &sa, &old_segv);
	sig = sigsetjmp(fault_jump, 1);
	if (!sig)
		(void)p[0];
	sigaction(SIGBUS, &old_bus, NULL);
	sigaction(SIGSEGV, &old_segv, NULL);
	return sig;
}

static void *map_plane(struct stream *s, unsigned int index, int prot, unsigned int *length)
{
	struct v4l2_plane planes[VIDEO_MAX_PLANES] = { 0 };
	struct v4l2_buffer buf = { .index = index, .type = s->type, .memory = V4L2_MEMORY_MMAP };
	unsigned long offset;

	if (s->type == V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE) {
		buf.m.planes = planes;
		buf.length = s->planes;
	}
	if (ioctl(s->fd, VIDIOC_QUERYBUF, &buf) < 0)
		return MAP_FAILED;
	if (s->type == V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE) {
		offset = planes[0].m.mem_offset;
		*length = planes[0].length;
	} else {
		offset = buf.m.offset;
		*length = buf.length;
	}
	return mmap(NULL, *length, prot, MAP_SHARED, s->fd, offset);
}

/*
 * A mapping of the device's memory, touched after the device is gone
 * (the script unbinds the driver, then creates GO-FILE): SIGBUS, never the
 * old contents.
 */
static int mmap_unbind(const char *go)
{
	struct stream s;
	unsigned int length;
	unsigned char *p;
	int sig;

	if (open_stream(&s, 0) < 0 || reqbufs(&s, 1, V4L2_MEMORY_MMAP) < 1)
		return fail("open or REQBUFS MMAP");
	p = map_plane(&s, 0, PROT_READ | PROT_WRITE, &length);
	if (p == MAP_FAILED)
		return fail("mmap");
	memset(p, 0x5a, length);
	if (touch(p))
		return fail("the mapping does not work before the device goes");
	printf("mmap-unbind: %u bytes mapped, waiting for %s\n", length, go);
	fflush(stdout);
	for (int i = 0; i < 600 && access(go, F_OK); i++)
		usleep(100000);
	sig = touch(p);
	printf("mmap-unbind: touching the mapping after the device went: %s (first byte was %#x)\n",
	       sig == SIGBUS ? "SIGBUS" : sig ? strsignal(sig) : "no signal", 0x5a);
	if (sig != SIGBUS)
		return fail(sig ? "wrong signal" : "stale memory still mapped after the device went");
	printf("PASS: SIGBUS after the device went\n");
	return 0;
}

/* A read-only mapping cannot be made writable. */
static int mprotect_readonly(void)
{
	struct stream s;
	unsigned int length;
	void *p;

	if (open_stream(&s, 0) < 0 || reqbufs(&s, 1, V4L2_MEMORY_MMAP) < 1)
		return fail("open or REQBUFS MMAP");
	p = map_plane(&s, 0, PROT_READ, &length);
	if (p == MAP_FAILED)
		return fail("read-only mmap");
	if (touch(p))
		return fail("the read-only mapping cannot be read");
	if (mprotect(p, length, PROT_READ | PROT_WRITE) == 0)
		return fail("mprotect made a read-only mapping writable");
	printf("mprotect: PROT_WRITE refused: %s\n", strerror(errno));
	if (errno != EACCES)
		return fail("mprotect failed, but not with EACCES");
	printf("PASS: a read-only mapping stays read-only\n");
	return 0;
}

static void on_alarm(int sig)
{
	(void)sig;
}

/* Arms a one-shot SIGALRM after `usec`, which interrupts system calls. */
static void alarm_in(long usec)
{
	struct itimerval t = { .it_value = { .tv_sec = usec / 1000000, .tv_usec = usec % 1000000 } };

	setitimer(ITIMER_REAL, &t, NULL);
}

/*
 * open() and mmap() interrupted by signals while the device (answering
 * after a delay) works on them: the sessions and mappings it creates must
 * be closed and unmapped by the driver (the device's reset log says).
 */
static int signals(long count)
{
	struct sigaction sa = { .sa_handler = on_alarm };
	long open_eintr = 0, mmap_eintr = 0;
	struct stream s;
	unsigned int length;

	sigaction(SIGALRM, &sa, NULL);
	for (long i = 0; i < count; i++) {
		alarm_in(20000);
		int fd = open(dev_path, O_RDWR);

		if (fd < 0 && errno == EINTR)
			open_eintr++;
		alarm_in(0);
		if (fd >= 0)
			close(fd);
	}
	if (open_stream(&s, 0) < 0 || reqbufs(&s, 1, V4L2_MEMORY_MMAP) < 1)
		return fail("open or REQBUFS MMAP");
	for (long i = 0; i < count; i++) {
		void *p;

		alarm_in(20000);
		p = map_plane(&s, 0, PROT_READ | PROT_WRITE, &length);
		if (p == MAP_FAILED && errno == EINTR)
			mmap_eintr++;
		alarm_in(0);
		if (p != MAP_FAILED)
			munmap(p, length);
	}
	close(s.fd);
	printf("signals: %ld of %ld opens and %ld of %ld mmaps interrupted\n", open_eintr, count,
	       mmap_eintr, count);
	if (!open_eintr || !mmap_eintr)
		return fail("no open or no mmap was interrupted: the device answers too fast");
	printf("PASS: interrupted opens and mmaps (the device's log decides)\n");
	return 0;
}

/* Many commands at once to a device that stopped answering. */
struct staller {
	int fd;
	double took;
	int err;
};

static void *stall_one(void *arg)
{
	struct staller *st = arg;
	struct v4l2_format fmt = { .type = V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE };
	double start = now();

	st->err = ioctl(st->fd, VIDIOC_G_FMT, &fmt) < 0 ? errno : 0;
	st->took = now() - start;
	return NULL;
}

static int stall(int threads)
{
	struct staller st[512];
	pthread_t t[512];
	double worst = 0;
	int fd, eio = 0;

	if (threads > 512)
		threads = 512;
	fd = open(dev_path, O_RDWR);
	if (fd < 0)
		return fail("open");
	for (int i = 0; i < threads; i++) {
		st[i].fd = fd;
		pthread_create(&t[i], NULL, stall_one, &st[i]);
	}
	for (int i = 0; i < threads; i++) {
		pthread_join(t[i], NULL);
		if (st[i].took > worst)
			worst = st[i].took;
		eio += st[i].err == EIO;
	}
	double start = now();

	close(fd);
	printf("stall: %d G_FMTs, %d got EIO, the slowest answer took %.1f s, close took %.1f s\n", threads,
	       eio, worst, now() - start);
	if (eio != threads)
		return fail("not every caller got EIO");
	if (worst > 15)
		return fail("a caller waited more than 15 s");
	printf("PASS: every caller got EIO in %.1f s at most\n", worst);
	return 0;
}

/*
 * A process killed while its file is open, on a device that answers
 * nothing any more: its exit closes the session, and that wait (with a
 * fatal signal pending) is bounded by the command timeout in real time.
 */
static int killed_close(void)
{
	int ready[2];
	pid_t child;
	double start;
	char c;

	if (pipe(ready) < 0)
		return fail("pipe");
	child = fork();
	if (child == 0) {
		int fd = open(dev_path, O_RDWR);

		if (write(ready[1], fd >= 0 ? "y" : "n", 1) != 1)
			_exit(1);
		pause();
		_exit(0);
	}
	if (read(ready[0], &c, 1) != 1 || c != 'y')
		return fail("the child could not open the device");
	start = now();
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	printf("killed-close: the killed process exited after %.1f s\n", now() - start);
	if (now() - start > 8)
		return fail("closing took longer than the 5 s command timeout allows");
	printf("PASS: exit within %.1f s\n", now() - start);
	return 0;
}

/* S_EXT_CTRLS with payloads adding up to more than the driver allows. */
static int big_controls(void)
{
	enum { COUNT = 8, SIZE = 1 << 20 };
	struct v4l2_ext_control ctrl[COUNT] = { 0 };
	struct v4l2_ext_controls ctrls = { .which = V4L2_CTRL_WHICH_CUR_VAL, .count = COUNT, .controls = ctrl };
	int fd = open(dev_path, O_RDWR);

	if (fd < 0)
		return fail("open");
	for (int i = 0; i < COUNT; i++) {
		ctrl[i].id = V4L2_CID_USER_BASE + 0x1000 + i;
		ctrl[i].size = SIZE;
		ctrl[i].ptr = calloc(1, SIZE);
	}
	if (ioctl(fd, VIDIOC_S_EXT_CTRLS, &ctrls) == 0)
		return fail("8 MiB of control payloads accepted");
	printf("big-controls: 8 x 1 MiB of payloads: %s\n", strerror(errno));
	if (errno != ENOMEM)
		return fail("refused, but not with ENOMEM");
	printf("PASS: refused with ENOMEM\n");
	return 0;
}

/* REQBUFS whose answer (or allocation) the driver must refuse. */
static int reqbufs_expect(unsigned int count, const char *memory, int expected)
{
	struct stream s;
	unsigned int mem = !strcmp(memory, "mmap") ? V4L2_MEMORY_MMAP : V4L2_MEMORY_USERPTR;
	int got;

	if (open_stream(&s, 0) < 0)
		return fail("open");
	printf("reqbufs: format sizeimage %u\n", s.size[0]);
	got = reqbufs(&s, count, mem);
	printf("reqbufs: REQBUFS(%u, %s): %s\n", count, memory, got >= 0 ? "accepted" : strerror(errno));
	if (got >= 0 || errno != expected)
		return fail("not refused with the expected errno");
	printf("PASS: refused with %s\n", strerror(expected));
	return 0;
}

/* A second open that the device answers with the first one's session. */
static int dup_session(void)
{
	struct v4l2_format fmt = { .type = V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE };
	int first = open(dev_path, O_RDWR), second;

	if (first < 0 || ioctl(first, VIDIOC_G_FMT, &fmt) < 0)
		return fail("first open");
	second = open(dev_path, O_RDWR);
	printf("dup-session: second open: %s\n", second < 0 ? strerror(errno) : "succeeded");
	if (second >= 0)
		return fail("an open with a duplicate session id succeeded");
	if (ioctl(first, VIDIOC_G_FMT, &fmt) < 0) {
		printf("dup-session: the first session's G_FMT: %s\n", strerror(errno));
		return fail("the first session no longer works");
	}
	printf("PASS: the second open failed, the first session still works\n");
	return 0;
}

static long pinned_pages(void)
{
	char line[128];
	long acquired = 0, released = 0;
	FILE *f;

	f = fopen("/proc/sys/vm/stat_refresh", "w");
	if (f) {
		fputs("1", f);
		fclose(f);
	}
	f = fopen("/proc/vmstat", "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		sscanf(line, "nr_foll_pin_acquired %ld", &acquired);
		sscanf(line, "nr_foll_pin_released %ld", &released);
	}
	fclose(f);
	return acquired - released;
}

/*
 * USERPTR buffers queued, then the device ends the session with an ERROR
 * event: their pages must be unpinned then, not when the file closes.
 */
static int error_pins(void)
{
	struct stream s;
	void *mem[BUFFERS][VIDEO_MAX_PLANES];
	long before, queued, after = -1;
	int i;

	before = pinned_pages();
	if (open_stream(&s, 0) < 0)
		return fail("open");
	for (int b = 0; b < BUFFERS; b++)
		for (unsigned int p = 0; p < s.planes; p++)
			if (posix_memalign(&mem[b][p], 4096, s.size[p]))
				return fail("memory");
	if (reqbufs(&s, BUFFERS, V4L2_MEMORY_USERPTR) < BUFFERS)
		return fail("REQBUFS USERPTR");
	for (int b = 0; b < BUFFERS; b++)
		if (qbuf_userptr(&s, b, mem[b]) < 0)
			return fail("QBUF");
	queued = pinned_pages();
	/* The device fails the session after a few ioctls. */
	for (i = 0; i < 50; i++) {
		struct v4l2_format fmt = { .type = s.type };

		if (ioctl(s.fd, VIDIOC_G_FMT, &fmt) < 0 && errno == EIO)
			break;
	}
	usleep(200000);
	after = pinned_pages();
	printf("error-pins: pinned pages %ld before, %ld with buffers queued, %ld after the ERROR event (file open)\n",
	       before, queued, after);
	if (i == 50)
		return fail("the device never failed the session");
	if (queued <= before)
		return fail("no page was pinned");
	if (after != before)
		return fail("pages stay pinned after the session failed");
	close(s.fd);
	printf("PASS: the pages were unpinned when the session failed\n");
	return 0;
}

/*
 * USERPTR buffers queued, then the file closed and the device fails the
 * CLOSE: the device may still write into the pages, so they stay pinned
 * until it is reset (hardening.sh then unbinds it and counts again).
 */
static int close_pins(void)
{
	struct stream s;
	void *mem[BUFFERS][VIDEO_MAX_PLANES];
	long before, queued, closed;

	before = pinned_pages();
	if (open_stream(&s, 0) < 0)
		return fail("open");
	for (int b = 0; b < BUFFERS; b++)
		for (unsigned int p = 0; p < s.planes; p++)
			if (posix_memalign(&mem[b][p], 4096, s.size[p]))
				return fail("memory");
	if (reqbufs(&s, BUFFERS, V4L2_MEMORY_USERPTR) < BUFFERS)
		return fail("REQBUFS USERPTR");
	for (int b = 0; b < BUFFERS; b++)
		if (qbuf_userptr(&s, b, mem[b]) < 0)
			return fail("QBUF");
	queued = pinned_pages();
	close(s.fd);
	closed = pinned_pages();
	printf("close-pins: pinned pages %ld before, %ld with buffers queued, %ld after a failed CLOSE\n",
	       before, queued, closed);
	if (queued <= before)
		return fail("no page was pinned");
	printf("PASS: the file closed with the device holding its buffers\n");
	return 0;
}

/*
 * MMAP streaming from a device that sends every DQBUF event twice: a buffer
 * comes back at most once per QBUF, so the program never dequeues more
 * buffers than it queued. (A copy that arrives after the program queued the
 * buffer again looks like that QBUF's return: no driver can tell them
 * apart.)
 */
static int stream_once(long frames)
{
	struct stream s;
	unsigned int sequence, last = 0;
	long qbufs = 0, dqbufs = 0, repeated = 0;
	int n, index;

	if (open_stream(&s, O_NONBLOCK) < 0)
		return fail("open");
	n = reqbufs(&s, BUFFERS, V4L2_MEMORY_MMAP);
	if (n < 1)
		return fail("REQBUFS MMAP");
	for (int b = 0; b < n; b++)
		qbufs += qbuf_mmap(&s, b) == 0;
	stream_on(&s, VIDIOC_STREAMON);
	while (dqbufs < frames) {
		struct pollfd pfd = { .fd = s.fd, .events = POLLIN };

		if (poll(&pfd, 1, 5000) <= 0)
			return fail("no frame within 5 s");
		index = dqbuf(&s, V4L2_MEMORY_MMAP, &sequence);
		if (index < 0)
			continue;
		if (dqbufs && sequence <= last)
			repeated++;
		last = sequence;
		dqbufs++;
		qbufs += qbuf_mmap(&s, index) == 0;
	}
	/* Whatever else comes back of what was queued, for half a second. */
	for (double end = now() + 0.5; now() < end;) {
		struct pollfd pfd = { .fd = s.fd, .events = POLLIN };

		if (poll(&pfd, 1, 100) > 0 && dqbuf(&s, V4L2_MEMORY_MMAP, NULL) >= 0)
			dqbufs++;
	}
	stream_on(&s, VIDIOC_STREAMOFF);
	close(s.fd);
	printf("stream-once: %ld QBUFs, %ld DQBUFs (%ld with a sequence seen before)\n", qbufs, dqbufs, repeated);
	if (dqbufs > qbufs)
		return fail("more buffers dequeued than queued");
	printf("PASS: %ld buffers dequeued of %ld queued\n", dqbufs, qbufs);
	return 0;
}

/*
 * While the device floods events: STREAMON/STREAMOFF, REQBUFS and
 * SUBSCRIBE_EVENT, which wait for the events the device sent before they
 * were answered, must still return promptly.
 */
static int flood_ioctls(int seconds)
{
	struct v4l2_event_subscription sub = { .type = V4L2_EVENT_SOURCE_CHANGE };
	double end = now() + seconds, worst = 0;
	struct stream s;
	long rounds = 0;

	if (open_stream(&s, 0) < 0)
		return fail("open");
	while (now() < end) {
		double start = now(), took;

		ioctl(s.fd, VIDIOC_SUBSCRIBE_EVENT, &sub);
		reqbufs(&s, BUFFERS, V4L2_MEMORY_MMAP);
		stream_on(&s, VIDIOC_STREAMON);
		stream_on(&s, VIDIOC_STREAMOFF);
		reqbufs(&s, 0, V4L2_MEMORY_MMAP);
		ioctl(s.fd, VIDIOC_UNSUBSCRIBE_EVENT, &sub);
		took = now() - start;
		if (took > worst)
			worst = took;
		rounds++;
	}
	close(s.fd);
	printf("flood-ioctls: %ld rounds, the slowest took %.2f s\n", rounds, worst);
	if (rounds < 5 || worst > 3)
		return fail("ioctls are held up by the event flood");
	printf("PASS: ioctls return promptly under an event flood\n");
	return 0;
}

/*
 * A device answering an ioctl with a kernel-internal errno
 * (ERESTARTNOINTR, --fault kernel-status): passed on, it reached the
 * program as errno 513, or restarted the system call when a signal was
 * pending. The ioctl runs in a child, in case it never returns; it must
 * fail with EIO.
 */
static int kernel_status(void)
{
	int result[2], fd, err = -1;
	struct pollfd p;
	pid_t child;

	if (pipe(result) < 0)
		return fail("pipe");
	child = fork();
	if (child == 0) {
		struct v4l2_fmtdesc desc = { .type = V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE };

		fd = open(dev_path, O_RDWR);
		err = fd < 0 ? -1 : ioctl(fd, VIDIOC_ENUM_FMT, &desc) < 0 ? errno : 0;
		if (write(result[1], &err, sizeof(err)) != sizeof(err))
			_exit(1);
		_exit(0);
	}
	p = (struct pollfd){ .fd = result[0], .events = POLLIN };
	if (poll(&p, 1, 20000) != 1) {
		kill(child, SIGKILL);
		waitpid(child, NULL, 0);
		return fail("ENUM_FMT did not return in 20 s");
	}
	if (read(result[0], &err, sizeof(err)) != sizeof(err))
		return fail("no result from the child");
	waitpid(child, NULL, 0);
	printf("kernel-status: ENUM_FMT returned %s\n", err < 0 ? "no file" : strerror(err));
	if (err != EIO)
		return fail("ENUM_FMT did not fail with EIO");
	printf("PASS: a kernel-internal status from the device is EIO\n");
	return 0;
}

/*
 * A device reporting more bytes used than a plane holds, or data starting
 * beyond them (--fault bytesused-overrun): programs size their reads by
 * these, so DQBUF must never show them.
 */
static int bytesused(long frames)
{
	long dqbufs = 0, bad = 0;
	struct stream s;
	int n;

	if (open_stream(&s, 0) < 0)
		return fail("open");
	n = reqbufs(&s, BUFFERS, V4L2_MEMORY_MMAP);
	if (n < 1)
		return fail("REQBUFS MMAP");
	for (int b = 0; b < n; b++)
		qbuf_mmap(&s, b);
	stream_on(&s, VIDIOC_STREAMON);
	while (dqbufs < frames) {
		struct v4l2_plane planes[VIDEO_MAX_PLANES] = { 0 };
		struct v4l2_buffer buf = { .type = s.type, .memory = V4L2_MEMORY_MMAP };
		struct pollfd pfd = { .fd = s.fd, .events = POLLIN };
		int multiplanar = s.type == V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE;

		if (multiplanar) {
			buf.m.planes = planes;
			buf.length = VIDEO_MAX_PLANES;
		}
		if (poll(&pfd, 1, 5000) <= 0)
			return fail("no frame within 5 s");
		if (ioctl(s.fd, VIDIOC_DQBUF, &buf) < 0)
			return fail("DQBUF");
		dqbufs++;
		if (!multiplanar && buf.bytesused > buf.length) {
			printf("buffer %u: %u bytes used of %u\n", buf.index, buf.bytesused, buf.length);
			bad++;
		}
		for (unsigned int p = 0; multiplanar && p < buf.length && p < VIDEO_MAX_PLANES; p++) {
			if (planes[p].bytesused > planes[p].length ||
			    planes[p].data_offset > planes[p].bytesused) {
				printf("buffer %u plane %u: %u bytes used from %u of %u\n", buf.index, p,
				       planes[p].bytesused, planes[p].data_offset, planes[p].length);
				bad++;
			}
		}
		qbuf_mmap(&s, buf.index);
	}
	stream_on(&s, VIDIOC_STREAMOFF);
	close(s.fd);
	printf("bytesused: %ld buffers dequeued, %ld with sizes beyond their planes\n", dqbufs, bad);
	if (bad)
		return fail("DQBUF showed sizes beyond the planes");
	printf("PASS: every dequeued plane's data fits it\n");
	return 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc < 3) {
		fprintf(stderr, "usage: %s TEST DEVICE [ARGS]\n", argv[0]);
		return 2;
	}
	dev_path = argv[2];
	if (!strcmp(argv[1], "qbuf-race") && argc == 4)
		return qbuf_race(atoi(argv[3]));
	if (!strcmp(argv[1], "open-close") && argc == 4)
		return open_close(atol(argv[3]));
	if (!strcmp(argv[1], "mmap-unbind") && argc == 4)
		return mmap_unbind(argv[3]);
	if (!strcmp(argv[1], "mprotect"))
		return mprotect_readonly();
	if (!strcmp(argv[1], "signals") && argc == 4)
		return signals(atol(argv[3]));
	if (!strcmp(argv[1], "stall") && argc == 4)
		return stall(atoi(argv[3]));
	if (!strcmp(argv[1], "killed-close"))
		return killed_close();
	if (!strcmp(argv[1], "big-controls"))
		return big_controls();
	if (!strcmp(argv[1], "reqbufs") && argc == 6)
		return reqbufs_expect(atoi(argv[3]), argv[4], atoi(argv[5]));
	if (!strcmp(argv[1], "dup-session"))
		return dup_session();
	if (!strcmp(argv[1], "error-pins"))
		return error_pins();
	if (!strcmp(argv[1], "close-pins"))
		return close_pins();
	if (!strcmp(argv[1], "stream-once") && argc == 4)
		return stream_once(atol(argv[3]));
	if (!strcmp(argv[1], "flood-ioctls") && argc == 4)
		return flood_ioctls(atoi(argv[3]));
	if (!strcmp(argv[1], "kernel-status"))
		return kernel_status();
	if (!strcmp(argv[1], "bytesused") && argc == 4)
		return bytesused(atol(argv[3]));
	fprintf(stderr, "%s: unknown test or wrong arguments: %s\n", argv[0], argv[1]);
	return 2;
}
