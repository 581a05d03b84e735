// SPDX-License-Identifier: GPL-2.0
/*
 * A buffer unmapped and at once mapped again, COUNT times, by a real-time
 * program, read-only and read-write in turn: every mmap() must succeed.
 * The driver does not wait for the device's answer to a MUNMAP in munmap()
 * (it cannot wait for the device under the mmap lock); the MMAP that
 * follows must still reach the device after the MUNMAP. A device keeps one
 * mapping per buffer with its permissions (the virtio-media crate's
 * MmapMappingManager refuses a second one with other permissions, EPERM).
 *
 * The program runs SCHED_FIFO on CPU 0 and a SCHED_FIFO spinner holds CPU
 * 1, so nothing of normal priority (a kworker) runs before the program
 * sleeps: the order is the driver's, not the scheduler's.
 *
 *   mmap-again DEVICE COUNT
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/videodev2.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

static void die(const char *what)
{
	fprintf(stderr, "FAIL: mmap-again: %s: %s\n", what, strerror(errno));
	exit(1);
}

/* Runs the caller SCHED_FIFO at priority 1 on `cpu`. */
static void realtime_on(int cpu)
{
	struct sched_param param = { .sched_priority = 1 };
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set))
		die("sched_setaffinity");
	if (sched_setscheduler(0, SCHED_FIFO, &param))
		die("sched_setscheduler");
}

int main(int argc, char **argv)
{
	struct v4l2_requestbuffers req = { .count = 1, .memory = V4L2_MEMORY_MMAP };
	struct v4l2_plane planes[VIDEO_MAX_PLANES] = { 0 };
	struct v4l2_buffer buf = { .memory = V4L2_MEMORY_MMAP };
	struct v4l2_capability cap = { 0 };
	unsigned int offset, length;
	int fd, count, mplane, failed = 0;
	pid_t spinner;

	if (argc != 3 || (count = atoi(argv[2])) <= 0) {
		fprintf(stderr, "usage: %s DEVICE COUNT\n", argv[0]);
		return 2;
	}
	fd = open(argv[1], O_RDWR);
	if (fd < 0)
		die("open");
	if (ioctl(fd, VIDIOC_QUERYCAP, &cap))
		die("QUERYCAP");
	mplane = !!(cap.device_caps & V4L2_CAP_VIDEO_CAPTURE_MPLANE);
	req.type = buf.type = mplane ? V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE : V4L2_BUF_TYPE_VIDEO_CAPTURE;
	if (ioctl(fd, VIDIOC_REQBUFS, &req) || req.count < 1)
		die("REQBUFS");
	if (mplane) {
		buf.m.planes = planes;
		buf.length = VIDEO_MAX_PLANES;
	}
	if (ioctl(fd, VIDIOC_QUERYBUF, &buf))
		die("QUERYBUF");
	offset = mplane ? planes[0].m.mem_offset : buf.m.offset;
	length = mplane ? planes[0].length : buf.length;

	spinner = fork();
	if (spinner < 0)
		die("fork");
	if (spinner == 0) {
		realtime_on(1);
		alarm(60);
		for (;;)
			;
	}
	realtime_on(0);
	for (int i = 0; i < count; i++) {
		int prot = i % 2 ? PROT_READ : PROT_READ | PROT_WRITE;
		void *p = mmap(NULL, length, prot, MAP_SHARED, fd, offset);

		if (p == MAP_FAILED) {
			if (!failed++)
				fprintf(stderr, "mmap-again: mmap %d (%s) failed: %s\n", i,
					prot & PROT_WRITE ? "read-write" : "read-only", strerror(errno));
			continue;
		}
		if (munmap(p, length))
			die("munmap");
	}
	kill(spinner, SIGKILL);
	waitpid(spinner, NULL, 0);
	close(fd);
	if (failed) {
		fprintf(stderr, "FAIL: mmap-again: %d of %d mmaps right after a munmap failed\n", failed,
			count);
		return 1;
	}
	printf("PASS: mmap-again: %d mmaps right after a munmap, read-only and read-write in turn, from a real-time program\n",
	       count);
	return 0;
}
