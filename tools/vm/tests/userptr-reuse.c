// SPDX-License-Identifier: GPL-2.0
/*
 * USERPTR memory kept between QBUFs, on a capture node with one buffer:
 *
 * 1. Queued again with the same memory, a returned buffer pins nothing new
 *    (the driver kept its pages pinned and mapped, as vb2 does).
 * 2. Queued with other memory, the frame lands there and not in the old
 *    memory, whose pages are unpinned.
 * 3. The old pages stay pinned only while the buffer could be queued again:
 *    STREAMOFF, REQBUFS(0) and close each give every pin back.
 * 4. A close whose CLOSE command cannot be sent at once (its n-th
 *    allocation fails, through /proc/thread-self/fail-nth) still gives the
 *    pages of a buffer the device holds back soon after, for every n
 *    (the driver sends the CLOSE again from its workqueue).
 *
 * Pins are read from /proc/vmstat (nr_foll_pin_acquired/released, per-CPU
 * deltas folded); nothing else in the guest pins pages while it runs.
 *
 *   userptr-reuse DEVICE
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/videodev2.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define FILL_OLD 0xaa
#define FILL_NEW 0x55

static const char *device;
static int fd, mplane;
static unsigned int type, num_planes = 1, plane_size[VIDEO_MAX_PLANES];

static void die(const char *what)
{
	fprintf(stderr, "FAIL: userptr-reuse: %s%s%s\n", what, errno ? ": " : "",
		errno ? strerror(errno) : "");
	exit(1);
}

static void xioctl(unsigned long request, void *arg, const char *name)
{
	int ret;

	do
		ret = ioctl(fd, request, arg);
	while (ret < 0 && errno == EINTR);
	if (ret < 0)
		die(name);
	errno = 0;
}

/* Pages pinned now, and pinned since boot. */
static void pins(long *now, long *acquired)
{
	long acq = -1, rel = -1, value;
	char name[64];
	int refresh = open("/proc/sys/vm/stat_refresh", O_WRONLY);
	FILE *f;

	/* /proc/vmstat lags by the per-CPU deltas until they are folded. */
	if (refresh < 0 || write(refresh, "1", 1) != 1)
		die("/proc/sys/vm/stat_refresh");
	close(refresh);
	f = fopen("/proc/vmstat", "r");
	if (!f)
		die("/proc/vmstat");
	while (fscanf(f, "%63s %ld", name, &value) == 2) {
		if (!strcmp(name, "nr_foll_pin_acquired"))
			acq = value;
		else if (!strcmp(name, "nr_foll_pin_released"))
			rel = value;
	}
	fclose(f);
	if (acq < 0 || rel < 0) {
		errno = 0;
		die("no nr_foll_pin counters");
	}
	*now = acq - rel;
	*acquired = acq;
}

/* One buffer's planes, page-aligned and filled with `fill`. */
static void alloc_planes(unsigned char *memory[], int fill)
{
	for (unsigned int p = 0; p < num_planes; p++) {
		memory[p] = mmap(NULL, plane_size[p], PROT_READ | PROT_WRITE,
				 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (memory[p] == MAP_FAILED)
			die("mmap");
		memset(memory[p], fill, plane_size[p]);
	}
}

static long pages_of_buffer(void)
{
	long pages = 0;

	for (unsigned int p = 0; p < num_planes; p++)
		pages += (plane_size[p] + 4095) / 4096;
	return pages;
}

static void requeue(unsigned char *memory[])
{
	struct v4l2_plane planes[VIDEO_MAX_PLANES] = { 0 };
	struct v4l2_buffer buf = { .type = type, .memory = V4L2_MEMORY_USERPTR };

	if (mplane) {
		for (unsigned int p = 0; p < num_planes; p++) {
			planes[p].m.userptr = (unsigned long)memory[p];
			planes[p].length = plane_size[p];
		}
		buf.m.planes = planes;
		buf.length = num_planes;
	} else {
		buf.m.userptr = (unsigned long)memory[0];
		buf.length = plane_size[0];
	}
	xioctl(VIDIOC_QBUF, &buf, "QBUF");
}

/* Waits for the buffer and checks it is `memory` with a frame in it. */
static void dequeue(unsigned char *memory[])
{
	struct v4l2_plane planes[VIDEO_MAX_PLANES] = { 0 };
	struct v4l2_buffer buf = { .type = type, .memory = V4L2_MEMORY_USERPTR };
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	unsigned long ptr;
	unsigned int used;

	if (poll(&pfd, 1, 5000) != 1)
		die("no buffer within 5 s");
	if (mplane) {
		buf.m.planes = planes;
		buf.length = VIDEO_MAX_PLANES;
	}
	xioctl(VIDIOC_DQBUF, &buf, "DQBUF");
	ptr = mplane ? planes[0].m.userptr : buf.m.userptr;
	used = mplane ? planes[0].bytesused : buf.bytesused;
	if (ptr != (unsigned long)memory[0] || used == 0) {
		fprintf(stderr, "FAIL: userptr-reuse: DQBUF gave %#lx with %u bytes, queued %p\n",
			ptr, used, (void *)memory[0]);
		exit(1);
	}
}

/* Whether every byte of the buffer is still `fill`. */
static int untouched(unsigned char *memory[], int fill)
{
	for (unsigned int p = 0; p < num_planes; p++)
		for (unsigned int i = 0; i < plane_size[p]; i++)
			if (memory[p][i] != fill)
				return 0;
	return 1;
}

static void open_queue(void)
{
	struct v4l2_requestbuffers req = {
		.count = 1, .type = type, .memory = V4L2_MEMORY_USERPTR,
	};

	fd = open(device, O_RDWR);
	if (fd < 0)
		die("open");
	xioctl(VIDIOC_REQBUFS, &req, "REQBUFS");
	if (req.count < 1)
		die("REQBUFS gave no buffer");
}

/* Fault injection through fail-nth fails only allocations the global
 * knobs allow: let it fail sleeping ones too (as tools/fuzz does), and
 * quietly (no stack dump per failure). */
static void allow_failing_sleeping_allocations(void)
{
	static const char *const knobs[][2] = {
		{ "/sys/kernel/debug/failslab/ignore-gfp-wait", "N" },
		{ "/sys/kernel/debug/failslab/verbose", "0" },
		{ "/sys/kernel/debug/fail_page_alloc/ignore-gfp-wait", "N" },
		{ "/sys/kernel/debug/fail_page_alloc/verbose", "0" },
	};

	for (unsigned int i = 0; i < sizeof(knobs) / sizeof(knobs[0]); i++) {
		int knob = open(knobs[i][0], O_WRONLY);

		if (knob < 0 || write(knob, knobs[i][1], 1) != 1)
			die(knobs[i][0]);
		close(knob);
	}
}

/* This thread's fail-nth, open for the whole test: opening or closing it
 * between arming and the close under test would use up allocations. */
static int failnth = -1;

/* Writes `n` to this thread's fail-nth; returns what it held before. */
static int fail_nth(int n)
{
	char text[16];
	ssize_t len;
	int before;

	len = pread(failnth, text, sizeof(text) - 1, 0);
	if (len < 0)
		die("reading fail-nth");
	text[len] = 0;
	before = atoi(text);
	len = snprintf(text, sizeof(text), "%d", n);
	if (pwrite(failnth, text, len, 0) != len)
		die("writing fail-nth");
	return before;
}

static void expect_pins(long expected, const char *when)
{
	long now, acquired;

	pins(&now, &acquired);
	if (now != expected) {
		fprintf(stderr, "FAIL: userptr-reuse: %ld pages pinned %s, expected %ld\n", now,
			when, expected);
		exit(1);
	}
	printf("userptr-reuse: %ld pages pinned %s\n", now, when);
}

int main(int argc, char **argv)
{
	unsigned char *old[VIDEO_MAX_PLANES], *new[VIDEO_MAX_PLANES];
	struct v4l2_capability cap = { 0 };
	struct v4l2_format fmt = { 0 };
	long base, acquired, now, again;
	struct v4l2_requestbuffers req = { 0 };

	if (argc != 2) {
		fprintf(stderr, "usage: %s DEVICE\n", argv[0]);
		return 2;
	}
	device = argv[1];
	fd = open(device, O_RDWR);
	if (fd < 0)
		die("open");
	xioctl(VIDIOC_QUERYCAP, &cap, "QUERYCAP");
	mplane = !!(cap.device_caps & V4L2_CAP_VIDEO_CAPTURE_MPLANE);
	type = mplane ? V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE : V4L2_BUF_TYPE_VIDEO_CAPTURE;
	fmt.type = type;
	xioctl(VIDIOC_G_FMT, &fmt, "G_FMT");
	if (mplane) {
		num_planes = fmt.fmt.pix_mp.num_planes;
		for (unsigned int p = 0; p < num_planes; p++)
			plane_size[p] = fmt.fmt.pix_mp.plane_fmt[p].sizeimage;
	} else {
		plane_size[0] = fmt.fmt.pix.sizeimage;
	}
	close(fd);
	alloc_planes(old, FILL_OLD);
	alloc_planes(new, FILL_NEW);
	pins(&base, &acquired);
	printf("userptr-reuse: %u planes, %ld pages a buffer, %ld pages pinned before\n",
	       num_planes, pages_of_buffer(), base);

	/* 1. The same memory again pins nothing. */
	open_queue();
	requeue(old);
	xioctl(VIDIOC_STREAMON, &type, "STREAMON");
	dequeue(old);
	expect_pins(base + pages_of_buffer(), "after the first DQBUF (kept)");
	pins(&now, &acquired);
	for (int i = 0; i < 10; i++) {
		requeue(old);
		dequeue(old);
	}
	pins(&now, &again);
	if (again != acquired) {
		fprintf(stderr, "FAIL: userptr-reuse: 10 QBUFs of the same memory pinned %ld pages\n",
			again - acquired);
		return 1;
	}
	printf("userptr-reuse: 10 QBUFs of the same memory pinned nothing\n");

	/* 2. Other memory: the frame lands there, the old pages are let go. */
	for (unsigned int p = 0; p < num_planes; p++)
		memset(old[p], FILL_OLD, plane_size[p]);
	requeue(new);
	dequeue(new);
	if (!untouched(old, FILL_OLD)) {
		fprintf(stderr, "FAIL: userptr-reuse: the device wrote into memory no longer queued\n");
		return 1;
	}
	if (untouched(new, FILL_NEW)) {
		fprintf(stderr, "FAIL: userptr-reuse: the frame is not in the memory queued\n");
		return 1;
	}
	expect_pins(base + pages_of_buffer(), "after queueing other memory");

	/* 3. Each way a queue ends gives the kept pages back. */
	xioctl(VIDIOC_STREAMOFF, &type, "STREAMOFF");
	expect_pins(base, "after STREAMOFF");
	requeue(new);
	xioctl(VIDIOC_STREAMON, &type, "STREAMON");
	dequeue(new);
	expect_pins(base + pages_of_buffer(), "streaming again");
	req.type = type;
	req.memory = V4L2_MEMORY_USERPTR;
	xioctl(VIDIOC_STREAMOFF, &type, "STREAMOFF");
	xioctl(VIDIOC_REQBUFS, &req, "REQBUFS(0)");
	expect_pins(base, "after STREAMOFF and REQBUFS(0)");
	close(fd);

	open_queue();
	requeue(old);
	xioctl(VIDIOC_STREAMON, &type, "STREAMON");
	dequeue(old);
	expect_pins(base + pages_of_buffer(), "in a new session");
	close(fd);
	expect_pins(base, "after close");

	/* 4. Closes whose n-th allocation fails, with the buffer queued. */
	allow_failing_sleeping_allocations();
	failnth = open("/proc/thread-self/fail-nth", O_RDWR);
	if (failnth < 0)
		die("/proc/thread-self/fail-nth (CONFIG_FAULT_INJECTION)");
	for (int n = 1;; n++) {
		long now = -1;
		int left;

		open_queue();
		requeue(old);
		fail_nth(n);
		close(fd);
		left = fail_nth(0);
		for (int waited = 0; waited < 30; waited++) {
			pins(&now, &acquired);
			if (now == base)
				break;
			usleep(100000);
		}
		if (now != base) {
			fprintf(stderr,
				"FAIL: userptr-reuse: a close whose allocation %d failed left %ld pages pinned 3 s later\n",
				n, now - base);
			return 1;
		}
		/* The close made fewer than n allocations: every one was failed. */
		if (left > 0) {
			printf("userptr-reuse: closes failing each of their %d allocations gave every pin back\n",
			       n - 1);
			break;
		}
		if (n == 100)
			die("close still allocating after 100 allocations");
	}
	printf("PASS: userptr-reuse: kept memory reused, replaced and released\n");
	return 0;
}
