// SPDX-License-Identifier: GPL-2.0
/*
 * What a program sees of a device that goes away or sleeps.
 *
 *   lifecycle-probe touch DEVICE
 *	MMAP capture: REQBUFS(2), mmap every buffer's first plane, stream
 *	one frame, then read and write the mappings until the end. Each
 *	SIGUSR1 prints a mark line: the values read since the last mark and
 *	how many touches there were. A SIGBUS (what a program must get once
 *	the memory behind a mapping is gone) prints "SIGBUS at ADDR" and
 *	exits 0; SIGTERM prints what was read and exits 3.
 *
 *   lifecycle-probe stream DEVICE
 *	MMAP capture with 4 mapped buffers: DQBUF (blocking) and QBUF until
 *	an ioctl fails, printing "frames N" every 10 frames. The failing
 *	ioctl is printed with its errno ("DQBUF: error 19 (No such device)")
 *	and the status is 1; SIGTERM ends it with status 3.
 *
 *   lifecycle-probe hold DEVICE
 *	Opens a session and checks it answers (QUERYCAP, G_FMT, G_CTRL), then
 *	waits; each SIGUSR1 asks the same again and prints each result
 *	("G_FMT: ok" or "G_FMT: error 5 (Input/output error)"). SIGTERM
 *	ends it (status 0).
 *
 * Both print "ready" once set up, and flush every line: the guest test
 * reads their output while they run.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/videodev2.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define BUFFERS 2

static volatile sig_atomic_t marks, terminate;

static void on_signal(int sig)
{
	if (sig == SIGUSR1)
		marks++;
	else
		terminate = 1;
}

/* Only async-signal-safe calls: the program may be anywhere in its loop. */
static void on_sigbus(int sig, siginfo_t *info, void *context)
{
	char line[64];
	int n;

	(void)sig;
	(void)context;
	n = snprintf(line, sizeof(line), "SIGBUS at %p\n", info->si_addr);
	if (n > 0)
		(void)!write(STDOUT_FILENO, line, (size_t)n);
	_exit(0);
}

static int xioctl(int fd, unsigned long request, void *arg, const char *name)
{
	int ret;

	do
		ret = ioctl(fd, request, arg);
	while (ret < 0 && errno == EINTR && !terminate && !marks);
	if (ret < 0)
		printf("%s: error %d (%s)\n", name, errno, strerror(errno));
	return ret;
}

static int open_capture(const char *path, unsigned int *type, int *mplane)
{
	struct v4l2_capability cap = { 0 };
	int fd = open(path, O_RDWR);

	if (fd < 0) {
		printf("open %s: error %d (%s)\n", path, errno, strerror(errno));
		return -1;
	}
	if (xioctl(fd, VIDIOC_QUERYCAP, &cap, "QUERYCAP") < 0)
		return -1;
	*mplane = !!(cap.device_caps & V4L2_CAP_VIDEO_CAPTURE_MPLANE);
	*type = *mplane ? V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE : V4L2_BUF_TYPE_VIDEO_CAPTURE;
	return fd;
}

static void install(int sig, void (*handler)(int))
{
	struct sigaction sa = { 0 };

	sa.sa_handler = handler;
	sigaction(sig, &sa, NULL);
}

/* REQBUFS(count) of MMAP buffers, each first plane mapped into map[]. */
static int map_buffers(int fd, unsigned int type, int mplane, unsigned int count,
		       volatile uint32_t **map, size_t *length)
{
	struct v4l2_plane planes[VIDEO_MAX_PLANES];
	struct v4l2_requestbuffers req = { 0 };
	struct v4l2_buffer buf;
	unsigned int b;

	req.count = count;
	req.type = type;
	req.memory = V4L2_MEMORY_MMAP;
	if (xioctl(fd, VIDIOC_REQBUFS, &req, "REQBUFS") < 0 || req.count < count)
		return -1;
	for (b = 0; b < count; b++) {
		memset(&buf, 0, sizeof(buf));
		memset(planes, 0, sizeof(planes));
		buf.type = type;
		buf.memory = V4L2_MEMORY_MMAP;
		buf.index = b;
		if (mplane) {
			buf.m.planes = planes;
			buf.length = VIDEO_MAX_PLANES;
		}
		if (xioctl(fd, VIDIOC_QUERYBUF, &buf, "QUERYBUF") < 0)
			return -1;
		length[b] = mplane ? planes[0].length : buf.length;
		map[b] = mmap(NULL, length[b], PROT_READ | PROT_WRITE, MAP_SHARED, fd,
			      mplane ? planes[0].m.mem_offset : buf.m.offset);
		if (map[b] == MAP_FAILED) {
			printf("mmap: error %d (%s)\n", errno, strerror(errno));
			return -1;
		}
		if (xioctl(fd, VIDIOC_QBUF, &buf, "QBUF") < 0)
			return -1;
	}
	return xioctl(fd, VIDIOC_STREAMON, &type, "STREAMON");
}

static int dequeue(int fd, unsigned int type, int mplane, struct v4l2_buffer *buf,
		   struct v4l2_plane *planes)
{
	memset(buf, 0, sizeof(*buf));
	buf->type = type;
	buf->memory = V4L2_MEMORY_MMAP;
	if (mplane) {
		buf->m.planes = planes;
		buf->length = VIDEO_MAX_PLANES;
	}
	return xioctl(fd, VIDIOC_DQBUF, buf, "DQBUF");
}

static int stream(const char *path)
{
	struct v4l2_plane planes[VIDEO_MAX_PLANES];
	volatile uint32_t *map[4];
	size_t length[4];
	struct v4l2_buffer buf;
	unsigned long frames = 0;
	unsigned int type;
	int fd, mplane;

	fd = open_capture(path, &type, &mplane);
	if (fd < 0 || map_buffers(fd, type, mplane, 4, map, length) < 0)
		return 1;
	printf("ready\n");
	fflush(stdout);
	while (!terminate) {
		if (dequeue(fd, type, mplane, &buf, planes) < 0)
			break;
		if (++frames % 10 == 0) {
			printf("frames %lu\n", frames);
			fflush(stdout);
		}
		if (xioctl(fd, VIDIOC_QBUF, &buf, "QBUF") < 0)
			break;
	}
	printf("ended after %lu frames\n", frames);
	return terminate ? 3 : 1;
}

static int touch(const char *path)
{
	struct v4l2_plane planes[VIDEO_MAX_PLANES];
	volatile uint32_t *map[BUFFERS];
	size_t length[BUFFERS];
	struct v4l2_buffer buf;
	struct sigaction sa = { 0 };
	unsigned long touches = 0;
	uint32_t first = 0, last = 0;
	int fd, mplane, seen_marks = 0;
	unsigned int type, b;

	sa.sa_sigaction = on_sigbus;
	sa.sa_flags = SA_SIGINFO;
	sigaction(SIGBUS, &sa, NULL);
	fd = open_capture(path, &type, &mplane);
	if (fd < 0 || map_buffers(fd, type, mplane, BUFFERS, map, length) < 0 ||
	    dequeue(fd, type, mplane, &buf, planes) < 0)
		return 1;
	printf("ready: %d buffers of %zu bytes mapped at %p, %p; frame %u read 0x%08x\n",
	       BUFFERS, length[0], (void *)map[0], (void *)map[1], buf.sequence,
	       map[buf.index % BUFFERS][0]);
	fflush(stdout);

	/* Each touch reads the first word of a page and writes it back. */
	while (!terminate) {
		for (b = 0; b < BUFFERS; b++) {
			for (size_t off = 0; off < length[b] / 4; off += 4096 / 4) {
				last = map[b][off];
				map[b][off] = last;
			}
		}
		if (touches++ == 0)
			first = last;
		if (marks != seen_marks) {
			seen_marks = marks;
			printf("mark %d: %lu touches of every page, first read 0x%08x, last 0x%08x\n",
			       seen_marks, touches, first, last);
			fflush(stdout);
			touches = 0;
		}
		usleep(10000);
	}
	printf("terminated without SIGBUS: %lu touches since the last mark, last read 0x%08x\n",
	       touches, last);
	return 3;
}

static void ask(int fd, unsigned int type)
{
	struct v4l2_capability cap = { 0 };
	struct v4l2_format fmt = { 0 };
	struct v4l2_control ctrl = { .id = V4L2_CID_BRIGHTNESS };

	if (xioctl(fd, VIDIOC_QUERYCAP, &cap, "QUERYCAP") == 0)
		printf("QUERYCAP: ok\n");
	fmt.type = type;
	if (xioctl(fd, VIDIOC_G_FMT, &fmt, "G_FMT") == 0)
		printf("G_FMT: ok\n");
	if (xioctl(fd, VIDIOC_G_CTRL, &ctrl, "G_CTRL") == 0)
		printf("G_CTRL: ok\n");
	fflush(stdout);
}

static int hold(const char *path)
{
	unsigned int type;
	int fd, mplane, seen_marks = 0;

	fd = open_capture(path, &type, &mplane);
	if (fd < 0)
		return 1;
	ask(fd, type);
	printf("ready\n");
	fflush(stdout);
	while (!terminate) {
		pause();
		if (marks != seen_marks) {
			seen_marks = marks;
			printf("mark %d\n", seen_marks);
			ask(fd, type);
		}
	}
	return 0;
}

int main(int argc, char **argv)
{
	install(SIGUSR1, on_signal);
	install(SIGTERM, on_signal);
	if (argc == 3 && !strcmp(argv[1], "touch"))
		return touch(argv[2]);
	if (argc == 3 && !strcmp(argv[1], "stream"))
		return stream(argv[2]);
	if (argc == 3 && !strcmp(argv[1], "hold"))
		return hold(argv[2]);
	fprintf(stderr, "usage: %s touch|stream|hold DEVICE\n", argv[0]);
	return 2;
}
