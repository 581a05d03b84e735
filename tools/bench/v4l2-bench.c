// SPDX-License-Identifier: GPL-2.0
/*
 * v4l2-bench: measures a V4L2 capture device through the V4L2 UAPI only
 * (open, ioctl, mmap, poll on /dev/videoN), so the same binary measures any
 * driver of the same device. Each invocation is one run of one test and
 * prints one JSON object on one line; every figure carries its unit in its
 * name (_us, _per_s, ...).
 *
 *   v4l2-bench -d DEV ioctl OP SESSIONS threads|procs SECONDS
 *       OP is G_FMT, G_EXT_CTRLS (one control: brightness) or QUERYCAP.
 *       SESSIONS threads or processes each open DEV (one session each)
 *       and repeat OP until SECONDS have passed; every call is timed.
 *       CPU time per call: of the calling threads (their own CPU clocks,
 *       system calls included) and of the whole guest (every task's
 *       scheduler runtime, see scan_tasks()); and
 *       how often a call slept (voluntary context switches per call).
 *   v4l2-bench -d DEV alternate DEV2 OP SECONDS
 *       OP on DEV and on DEV2 in turn from one thread (one session each),
 *       pairs in alternating order, for SECONDS: p50 latency and CPU time
 *       per call of each node, and the median of the pairs' latency
 *       ratios. Two drivers compared this way see the same moments of
 *       the host.
 *   v4l2-bench -d DEV alternate DEV2 openclose COUNT
 *       open() and close() of DEV and DEV2 in turn, COUNT pairs: p50 of
 *       each per node, and the medians of the pairs' ratios.
 *   v4l2-bench cpu CMD [ARGS...]
 *       Runs CMD; prints its wall time and the guest CPU time it and
 *       every other task used meanwhile (the same measure as below).
 *   v4l2-bench -d DEV openclose COUNT
 *   v4l2-bench -d DEV mmap COUNT        (one MMAP buffer, mapped and unmapped)
 *   v4l2-bench -d DEV stream mmap|userptr WIDTH HEIGHT SECONDS
 *       YUYV frames through 4 buffers for SECONDS; frames per second and
 *       CPU time per frame, of this process and of the whole guest
 *       (every task's scheduler runtime).
 *
 * A test the driver refuses (for instance REQBUFS with USERPTR memory)
 * prints "supported": false with the errno, and exits 0; other failures
 * exit 1.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/videodev2.h>

#define MAX_SESSIONS 64
#define MAX_SAMPLES (1 << 20)
#define NBUFS 4

static const char *dev = "/dev/video0";

static void die(const char *what)
{
	fprintf(stderr, "v4l2-bench: %s: %s\n", what, strerror(errno));
	exit(1);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static int xioctl(int fd, unsigned long req, void *arg)
{
	int r;

	do
		r = ioctl(fd, req, arg);
	while (r < 0 && errno == EINTR);
	return r;
}

static int open_dev(void)
{
	int fd = open(dev, O_RDWR);

	if (fd < 0)
		die(dev);
	return fd;
}

/* The capture buffer type the device offers, from VIDIOC_QUERYCAP. */
static enum v4l2_buf_type capture_type(int fd)
{
	struct v4l2_capability cap;
	uint32_t caps;

	memset(&cap, 0, sizeof(cap));
	if (xioctl(fd, VIDIOC_QUERYCAP, &cap))
		die("VIDIOC_QUERYCAP");
	caps = cap.capabilities & V4L2_CAP_DEVICE_CAPS ? cap.device_caps : cap.capabilities;
	if (caps & V4L2_CAP_VIDEO_CAPTURE_MPLANE)
		return V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE;
	if (caps & V4L2_CAP_VIDEO_CAPTURE)
		return V4L2_BUF_TYPE_VIDEO_CAPTURE;
	fprintf(stderr, "v4l2-bench: %s is not a capture device\n", dev);
	exit(1);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Nearest-rank quantile of sorted samples, in microseconds. */
static double quantile_us(const uint64_t *s, size_t n, double q)
{
	size_t rank;

	if (!n)
		return 0;
	rank = (size_t)(q * n + 0.999999);
	if (rank < 1)
		rank = 1;
	if (rank > n)
		rank = n;
	return s[rank - 1] / 1000.0;
}

/* ---- forwarded and local ioctls from several sessions ---------------- */

enum op { OP_G_FMT, OP_G_EXT_CTRLS, OP_QUERYCAP };

struct shared {
	pthread_barrier_t start;
	uint64_t t_start, deadline_ns;
	uint64_t ops[MAX_SESSIONS], end_ns[MAX_SESSIONS];
	uint64_t cpu_ns[MAX_SESSIONS];	/* each worker's CPU time in its loop */
	uint64_t sleeps[MAX_SESSIONS];	/* and its voluntary context switches */
	int err[MAX_SESSIONS];
	size_t per_worker;	/* sample slots per worker */
	uint64_t samples[];	/* per_worker slots for each worker */
};

struct worker {
	struct shared *sh;
	enum op op;
	int idx;
	double seconds;
};

/* The calling thread's voluntary context switches (sleeps). */
static uint64_t thread_sleeps(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_THREAD, &ru))
		return 0;
	return ru.ru_nvcsw;
}

/* The calling thread's CPU time: user and system, its own clock. */
static uint64_t thread_cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

/*
 * CPU time of every task of the guest but the calling thread, from
 * /proc/PID/task/TID/sched (se.sum_exec_runtime, printed as milliseconds
 * with six decimals). Not /proc/stat: this kernel samples idle time at
 * the tick unless the tick is stopped, and under TCG the samples line up
 * with the work (on 2026-12-03 a loop woken by the timer that ran 12.5 %
 * of a second read as 1 % busy, and G_FMT's guest time read lower than
 * the program's own). Blind spot: an interrupt taken while its CPU idles
 * is charged to no task.
 */
#define MAX_TASKS 4096

struct task_time {
	long tid;
	uint64_t ns;
};

struct task_times {
	size_t n;
	struct task_time t[MAX_TASKS];
};

static int cmp_tid(const void *a, const void *b)
{
	const struct task_time *x = a, *y = b;

	return (x->tid > y->tid) - (x->tid < y->tid);
}

static int task_runtime_ns(long pid, long tid, uint64_t *ns)
{
	char path[96], line[160];
	unsigned long long ms, frac;
	int found = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%ld/task/%ld/sched", pid, tid);
	f = fopen(path, "r");
	if (!f)
		return -1;	/* the task ended */
	while (!found && fgets(line, sizeof(line), f)) {
		const char *v = strstr(line, "se.sum_exec_runtime");
		const char *colon = v ? strchr(v, ':') : NULL;

		if (colon && sscanf(colon + 1, "%llu.%6llu", &ms, &frac) == 2) {
			*ns = ms * 1000000ull + frac;
			found = 1;
		}
	}
	fclose(f);
	return found ? 0 : -1;
}

static void scan_tasks(struct task_times *s)
{
	long self = gettid();
	struct dirent *p, *t;
	DIR *procs, *tasks;
	char path[64];

	s->n = 0;
	procs = opendir("/proc");
	if (!procs)
		die("/proc");
	while ((p = readdir(procs))) {
		long pid = atol(p->d_name);

		if (pid <= 0)
			continue;
		snprintf(path, sizeof(path), "/proc/%ld/task", pid);
		tasks = opendir(path);
		if (!tasks)
			continue;
		while ((t = readdir(tasks)) && s->n < MAX_TASKS) {
			long tid = atol(t->d_name);
			uint64_t ns;

			if (tid <= 0 || tid == self)
				continue;
			if (!task_runtime_ns(pid, tid, &ns))
				s->t[s->n++] = (struct task_time){ tid, ns };
		}
		closedir(tasks);
	}
	closedir(procs);
	qsort(s->t, s->n, sizeof(s->t[0]), cmp_tid);
}

/*
 * CPU time, in ns, the tasks present in both scans used between them.
 * Tasks that ended in between (the benchmark's own workers) are the
 * caller's to add.
 */
static uint64_t tasks_delta_ns(const struct task_times *a, const struct task_times *b)
{
	size_t i = 0, j = 0;
	uint64_t sum = 0;

	while (i < a->n && j < b->n) {
		if (a->t[i].tid < b->t[j].tid) {
			i++;
		} else if (a->t[i].tid > b->t[j].tid) {
			j++;
		} else {
			if (b->t[j].ns > a->t[i].ns)
				sum += b->t[j].ns - a->t[i].ns;
			i++;
			j++;
		}
	}
	return sum;
}

static struct task_times scan0, scan1;

/* One call of OP on fd; 0 or -1 with errno. */
static int do_op(int fd, enum op op, enum v4l2_buf_type type)
{
	struct v4l2_capability cap;
	struct v4l2_format fmt;
	struct v4l2_ext_controls ctrls;
	struct v4l2_ext_control ctrl;

	switch (op) {
	case OP_G_FMT:
		memset(&fmt, 0, sizeof(fmt));
		fmt.type = type;
		return xioctl(fd, VIDIOC_G_FMT, &fmt);
	case OP_G_EXT_CTRLS:
		memset(&ctrls, 0, sizeof(ctrls));
		memset(&ctrl, 0, sizeof(ctrl));
		ctrl.id = V4L2_CID_BRIGHTNESS;
		ctrls.which = V4L2_CTRL_WHICH_CUR_VAL;
		ctrls.count = 1;
		ctrls.controls = &ctrl;
		return xioctl(fd, VIDIOC_G_EXT_CTRLS, &ctrls);
	case OP_QUERYCAP:
		memset(&cap, 0, sizeof(cap));
		return xioctl(fd, VIDIOC_QUERYCAP, &cap);
	}
	errno = EINVAL;
	return -1;
}

static void *ioctl_worker(void *arg)
{
	struct worker *w = arg;
	struct shared *sh = w->sh;
	uint64_t *lat = sh->samples + (size_t)w->idx * sh->per_worker;
	enum v4l2_buf_type type;
	uint64_t n = 0, t0, t1, deadline, cpu0, sleeps0;
	int fd, r = 0;

	fd = open_dev();
	type = capture_type(fd);
	pthread_barrier_wait(&sh->start);
	cpu0 = thread_cpu_ns();
	sleeps0 = thread_sleeps();
	deadline = now_ns() + (uint64_t)(w->seconds * 1e9);
	for (;;) {
		t0 = now_ns();
		if (t0 >= deadline)
			break;
		r = do_op(fd, w->op, type);
		t1 = now_ns();
		if (r) {
			sh->err[w->idx] = errno;
			break;
		}
		if (n < sh->per_worker)
			lat[n] = t1 - t0;
		n++;
	}
	sh->cpu_ns[w->idx] = thread_cpu_ns() - cpu0;
	sh->sleeps[w->idx] = thread_sleeps() - sleeps0;
	sh->ops[w->idx] = n;
	sh->end_ns[w->idx] = now_ns();
	close(fd);
	return NULL;
}

static const char *op_name(enum op op)
{
	return op == OP_G_FMT ? "G_FMT" : op == OP_G_EXT_CTRLS ? "G_EXT_CTRLS" : "QUERYCAP";
}

static int bench_ioctl(enum op op, int sessions, int procs, double seconds)
{
	size_t per_worker = MAX_SAMPLES / sessions, total = 0, n;
	size_t size = sizeof(struct shared) + sizeof(uint64_t) * per_worker * sessions;
	struct worker w[MAX_SESSIONS];
	pthread_t th[MAX_SESSIONS];
	pthread_barrierattr_t ba;
	struct shared *sh;
	uint64_t *all, end = 0, ops = 0, cpu = 0, sleeps = 0, others;
	double wall, sum = 0;
	int i;

	/* Shared with child processes, so the same code serves both modes. */
	sh = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		die("mmap");
	sh->per_worker = per_worker;
	pthread_barrierattr_init(&ba);
	pthread_barrierattr_setpshared(&ba, PTHREAD_PROCESS_SHARED);
	pthread_barrier_init(&sh->start, &ba, sessions + 1);
	for (i = 0; i < sessions; i++) {
		w[i] = (struct worker){ .sh = sh, .op = op, .idx = i, .seconds = seconds };
		if (procs) {
			pid_t pid = fork();

			if (pid < 0)
				die("fork");
			if (!pid) {
				ioctl_worker(&w[i]);
				_exit(0);
			}
		} else if (pthread_create(&th[i], NULL, ioctl_worker, &w[i])) {
			die("pthread_create");
		}
	}
	/* Before the workers start, so that the scan does not compete with them. */
	scan_tasks(&scan0);
	pthread_barrier_wait(&sh->start);
	sh->t_start = now_ns();
	for (i = 0; i < sessions; i++) {
		if (procs) {
			int st;

			if (wait(&st) < 0 || !WIFEXITED(st) || WEXITSTATUS(st))
				die("worker process failed");
		} else {
			pthread_join(th[i], NULL);
		}
	}
	scan_tasks(&scan1);
	others = tasks_delta_ns(&scan0, &scan1);
	for (i = 0; i < sessions; i++) {
		if (sh->err[i]) {
			errno = sh->err[i];
			die(op_name(op));
		}
		ops += sh->ops[i];
		cpu += sh->cpu_ns[i];
		sleeps += sh->sleeps[i];
		if (sh->end_ns[i] > end)
			end = sh->end_ns[i];
	}
	/* Gather the samples of every worker. */
	all = malloc(sizeof(uint64_t) * per_worker * sessions);
	if (!all)
		die("malloc");
	for (i = 0; i < sessions; i++) {
		n = sh->ops[i] < per_worker ? sh->ops[i] : per_worker;
		memcpy(all + total, sh->samples + (size_t)i * per_worker, n * sizeof(uint64_t));
		total += n;
	}
	qsort(all, total, sizeof(uint64_t), cmp_u64);
	for (n = 0; n < total; n++)
		sum += all[n];
	wall = (end - sh->t_start) / 1e9;
	printf("{\"test\": \"ioctl\", \"op\": \"%s\", \"sessions\": %d, \"mode\": \"%s\", "
	       "\"ops\": %llu, \"seconds\": %.6f, \"ops_per_s\": %.1f, \"lat_p50_us\": %.2f, "
	       "\"lat_p99_us\": %.2f, \"lat_mean_us\": %.2f, \"lat_min_us\": %.2f, "
	       "\"process_cpu_us_per_op\": %.2f, \"guest_cpu_us_per_op\": %.2f, "
	       "\"sleeps_per_op\": %.3f}\n",
	       op_name(op), sessions, procs ? "procs" : "threads", (unsigned long long)ops, wall,
	       ops / wall, quantile_us(all, total, 0.5), quantile_us(all, total, 0.99),
	       total ? sum / total / 1000.0 : 0, quantile_us(all, total, 0),
	       ops ? cpu / 1000.0 / ops : 0,
	       ops ? (cpu + others) / 1000.0 / ops : 0,
	       ops ? (double)sleeps / ops : 0);
	free(all);
	munmap(sh, size);
	return 0;
}

/* ---- open/close, mmap/munmap ------------------------------------------ */

static void print_lat(const char *what, uint64_t *s, size_t n)
{
	double sum = 0;
	size_t i;

	qsort(s, n, sizeof(uint64_t), cmp_u64);
	for (i = 0; i < n; i++)
		sum += s[i];
	printf("\"%s_count\": %zu, \"%s_p50_us\": %.2f, \"%s_p99_us\": %.2f, \"%s_mean_us\": %.2f",
	       what, n, what, quantile_us(s, n, 0.5), what, quantile_us(s, n, 0.99), what,
	       n ? sum / n / 1000.0 : 0);
}

static int bench_openclose(int count)
{
	uint64_t *op = calloc(count, sizeof(uint64_t)), *cl = calloc(count, sizeof(uint64_t));
	uint64_t t0, t1, t2;
	int i, fd;

	if (!op || !cl)
		die("calloc");
	for (i = 0; i < count; i++) {
		t0 = now_ns();
		fd = open(dev, O_RDWR);
		t1 = now_ns();
		if (fd < 0)
			die(dev);
		close(fd);
		t2 = now_ns();
		op[i] = t1 - t0;
		cl[i] = t2 - t1;
	}
	printf("{\"test\": \"openclose\", ");
	print_lat("open", op, count);
	printf(", ");
	print_lat("close", cl, count);
	printf("}\n");
	return 0;
}

/* REQBUFS(count) of memory `mem` on a fresh format; returns -errno. */
static int reqbufs(int fd, enum v4l2_buf_type type, enum v4l2_memory mem, unsigned int count)
{
	struct v4l2_requestbuffers req;

	memset(&req, 0, sizeof(req));
	req.count = count;
	req.type = type;
	req.memory = mem;
	if (xioctl(fd, VIDIOC_REQBUFS, &req))
		return -errno;
	return req.count;
}

static int mplane(enum v4l2_buf_type type)
{
	return type == V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE;
}

/* Sets YUYV WxH; returns the image size of its (single) plane. */
static uint32_t set_yuyv(int fd, enum v4l2_buf_type type, uint32_t width, uint32_t height)
{
	struct v4l2_format fmt;

	memset(&fmt, 0, sizeof(fmt));
	fmt.type = type;
	if (mplane(type)) {
		fmt.fmt.pix_mp.width = width;
		fmt.fmt.pix_mp.height = height;
		fmt.fmt.pix_mp.pixelformat = V4L2_PIX_FMT_YUYV;
		fmt.fmt.pix_mp.num_planes = 1;
	} else {
		fmt.fmt.pix.width = width;
		fmt.fmt.pix.height = height;
		fmt.fmt.pix.pixelformat = V4L2_PIX_FMT_YUYV;
	}
	if (xioctl(fd, VIDIOC_S_FMT, &fmt))
		die("VIDIOC_S_FMT");
	if (mplane(type)) {
		if (fmt.fmt.pix_mp.width != width || fmt.fmt.pix_mp.height != height ||
		    fmt.fmt.pix_mp.pixelformat != V4L2_PIX_FMT_YUYV || fmt.fmt.pix_mp.num_planes != 1) {
			fprintf(stderr, "v4l2-bench: YUYV %ux%u not accepted\n", width, height);
			exit(1);
		}
		return fmt.fmt.pix_mp.plane_fmt[0].sizeimage;
	}
	if (fmt.fmt.pix.width != width || fmt.fmt.pix.height != height) {
		fprintf(stderr, "v4l2-bench: YUYV %ux%u not accepted\n", width, height);
		exit(1);
	}
	return fmt.fmt.pix.sizeimage;
}

/* QUERYBUF index: the MMAP offset and length of its plane. */
static void querybuf(int fd, enum v4l2_buf_type type, unsigned int index, uint32_t *offset, uint32_t *length)
{
	struct v4l2_plane planes[VIDEO_MAX_PLANES];
	struct v4l2_buffer b;

	memset(&b, 0, sizeof(b));
	memset(planes, 0, sizeof(planes));
	b.type = type;
	b.memory = V4L2_MEMORY_MMAP;
	b.index = index;
	if (mplane(type)) {
		b.m.planes = planes;
		b.length = VIDEO_MAX_PLANES;
	}
	if (xioctl(fd, VIDIOC_QUERYBUF, &b))
		die("VIDIOC_QUERYBUF");
	*offset = mplane(type) ? planes[0].m.mem_offset : b.m.offset;
	*length = mplane(type) ? planes[0].length : b.length;
}

static int bench_mmap(int count)
{
	uint64_t *mp = calloc(count, sizeof(uint64_t)), *um = calloc(count, sizeof(uint64_t));
	uint64_t t0, t1, t2;
	enum v4l2_buf_type type;
	uint32_t offset, length;
	void *p;
	int i, fd;

	if (!mp || !um)
		die("calloc");
	fd = open_dev();
	type = capture_type(fd);
	set_yuyv(fd, type, 640, 480);
	if (reqbufs(fd, type, V4L2_MEMORY_MMAP, 1) < 1) {
		errno = EINVAL;
		die("VIDIOC_REQBUFS(MMAP, 1)");
	}
	querybuf(fd, type, 0, &offset, &length);
	for (i = 0; i < count; i++) {
		t0 = now_ns();
		p = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, offset);
		t1 = now_ns();
		if (p == MAP_FAILED)
			die("mmap");
		if (munmap(p, length))
			die("munmap");
		t2 = now_ns();
		mp[i] = t1 - t0;
		um[i] = t2 - t1;
	}
	reqbufs(fd, type, V4L2_MEMORY_MMAP, 0);
	close(fd);
	printf("{\"test\": \"mmap\", \"bytes\": %u, ", length);
	print_lat("mmap", mp, count);
	printf(", ");
	print_lat("munmap", um, count);
	printf("}\n");
	return 0;
}

/* ---- streaming ---------------------------------------------------------- */

static double cpu_seconds(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
	       (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static int qbuf(int fd, enum v4l2_buf_type type, enum v4l2_memory mem, unsigned int index,
		void *ptr, uint32_t length)
{
	struct v4l2_plane planes[VIDEO_MAX_PLANES];
	struct v4l2_buffer b;

	memset(&b, 0, sizeof(b));
	memset(planes, 0, sizeof(planes));
	b.type = type;
	b.memory = mem;
	b.index = index;
	if (mplane(type)) {
		b.m.planes = planes;
		b.length = 1;
		planes[0].length = length;
		if (mem == V4L2_MEMORY_USERPTR)
			planes[0].m.userptr = (unsigned long)ptr;
	} else if (mem == V4L2_MEMORY_USERPTR) {
		b.m.userptr = (unsigned long)ptr;
		b.length = length;
	}
	return xioctl(fd, VIDIOC_QBUF, &b);
}

static int dqbuf(int fd, enum v4l2_buf_type type, enum v4l2_memory mem, unsigned int *index)
{
	struct v4l2_plane planes[VIDEO_MAX_PLANES];
	struct v4l2_buffer b;

	memset(&b, 0, sizeof(b));
	memset(planes, 0, sizeof(planes));
	b.type = type;
	b.memory = mem;
	if (mplane(type)) {
		b.m.planes = planes;
		b.length = VIDEO_MAX_PLANES;
	}
	if (xioctl(fd, VIDIOC_DQBUF, &b))
		return -1;
	*index = b.index;
	return 0;
}

static int bench_stream(enum v4l2_memory mem, uint32_t width, uint32_t height, double seconds)
{
	const char *mname = mem == V4L2_MEMORY_MMAP ? "mmap" : "userptr";
	void *bufs[NBUFS] = { 0 };
	uint32_t lens[NBUFS] = { 0 };
	uint64_t t0, t1, deadline;
	enum v4l2_buf_type type;
	struct pollfd pfd;
	unsigned int idx;
	double cpu0, cpu1, wall, busy;
	uint32_t size;
	int fd, n, i, frames;

	fd = open_dev();
	type = capture_type(fd);
	size = set_yuyv(fd, type, width, height);
	n = reqbufs(fd, type, mem, NBUFS);
	if (n <= 0) {
		/* The driver does not take this memory type: say so, no figure. */
		printf("{\"test\": \"stream\", \"memory\": \"%s\", \"width\": %u, \"height\": %u, "
		       "\"supported\": false, \"errno\": %d, \"error\": \"VIDIOC_REQBUFS: %s\"}\n",
		       mname, width, height, n < 0 ? -n : 0, n < 0 ? strerror(-n) : "0 buffers");
		close(fd);
		return 0;
	}
	for (i = 0; i < n; i++) {
		if (mem == V4L2_MEMORY_MMAP) {
			uint32_t offset;

			querybuf(fd, type, i, &offset, &lens[i]);
			bufs[i] = mmap(NULL, lens[i], PROT_READ | PROT_WRITE, MAP_SHARED, fd, offset);
			if (bufs[i] == MAP_FAILED)
				die("mmap");
		} else {
			lens[i] = size;
			if (posix_memalign(&bufs[i], 4096, size))
				die("posix_memalign");
			memset(bufs[i], 0, size);	/* fault the pages in first */
		}
		if (qbuf(fd, type, mem, i, bufs[i], lens[i]))
			die("VIDIOC_QBUF");
	}
	if (xioctl(fd, VIDIOC_STREAMON, &type))
		die("VIDIOC_STREAMON");
	scan_tasks(&scan0);
	cpu0 = cpu_seconds();
	t0 = now_ns();
	deadline = t0 + (uint64_t)(seconds * 1e9);
	pfd.fd = fd;
	pfd.events = POLLIN;
	for (frames = 0; frames == 0 || now_ns() < deadline; frames++) {
		int pr = poll(&pfd, 1, 5000);

		if (pr != 1) {
			if (pr == 0)
				errno = ETIMEDOUT;
			die("poll");
		}
		if (dqbuf(fd, type, mem, &idx))
			die("VIDIOC_DQBUF");
		if (idx >= (unsigned int)n) {
			fprintf(stderr, "v4l2-bench: DQBUF index %u out of range\n", idx);
			return 1;
		}
		if (qbuf(fd, type, mem, idx, bufs[idx], lens[idx]))
			die("VIDIOC_QBUF");
	}
	t1 = now_ns();
	cpu1 = cpu_seconds();
	scan_tasks(&scan1);
	if (xioctl(fd, VIDIOC_STREAMOFF, &type))
		die("VIDIOC_STREAMOFF");
	wall = (t1 - t0) / 1e9;
	busy = (cpu1 - cpu0) * 1e6 + tasks_delta_ns(&scan0, &scan1) / 1e3;
	printf("{\"test\": \"stream\", \"memory\": \"%s\", \"width\": %u, \"height\": %u, "
	       "\"supported\": true, \"buffers\": %d, \"frame_bytes\": %u, \"frames\": %d, "
	       "\"seconds\": %.6f, \"fps\": %.2f, \"process_cpu_us_per_frame\": %.1f, "
	       "\"guest_cpu_us_per_frame\": %.1f, \"guest_busy_fraction\": %.3f}\n",
	       mname, width, height, n, size, frames, wall, frames / wall,
	       (cpu1 - cpu0) * 1e6 / frames, busy / frames,
	       busy / (sysconf(_SC_NPROCESSORS_ONLN) * wall * 1e6));
	for (i = 0; i < n; i++) {
		if (mem == V4L2_MEMORY_MMAP)
			munmap(bufs[i], lens[i]);
	}
	reqbufs(fd, type, mem, 0);
	for (i = 0; i < n; i++) {
		if (mem == V4L2_MEMORY_USERPTR)
			free(bufs[i]);
	}
	close(fd);
	return 0;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: v4l2-bench [-d DEV] ioctl G_FMT|G_EXT_CTRLS|QUERYCAP SESSIONS threads|procs SECONDS\n"
		"       v4l2-bench [-d DEV] alternate DEV2 G_FMT|G_EXT_CTRLS|QUERYCAP SECONDS\n"
		"       v4l2-bench [-d DEV] alternate DEV2 openclose COUNT\n"
		"       v4l2-bench [-d DEV] openclose COUNT\n"
		"       v4l2-bench cpu CMD [ARGS...]\n"
		"       v4l2-bench [-d DEV] mmap COUNT\n"
		"       v4l2-bench [-d DEV] stream mmap|userptr WIDTH HEIGHT SECONDS\n");
	exit(2);
}

/* The median of the ratios a[i]/b[i] of n pairs (b[i] > 0). */
static double median_ratio(const uint64_t *a, const uint64_t *b, size_t n)
{
	uint64_t *r = malloc(sizeof(uint64_t) * (n ? n : 1));
	double m;
	size_t i;

	if (!r)
		die("malloc");
	for (i = 0; i < n; i++)
		r[i] = b[i] ? a[i] * 1000 / b[i] : 0;
	qsort(r, n, sizeof(uint64_t), cmp_u64);
	m = quantile_us(r, n, 0.5);
	free(r);
	return m;
}

/*
 * OP on two nodes in turn from one thread, DEV (a) and DEV2 (b), each
 * pair in alternating order (ab, ba, ...), so that whatever slows the
 * host or the guest for a while slows both alike: latency of each call
 * and the thread's CPU time around it, per node, and the median of the
 * pairs' own latency ratios.
 */
static int bench_alternate(const char *dev2, enum op op, double seconds)
{
	size_t n = 0, max = MAX_SAMPLES / 2;
	uint64_t *lat[2], cpu[2] = { 0, 0 }, deadline;
	enum v4l2_buf_type type[2];
	double pair_ratio;
	int fd[2], i;

	fd[0] = open_dev();
	fd[1] = open(dev2, O_RDWR);
	if (fd[1] < 0)
		die(dev2);
	for (i = 0; i < 2; i++) {
		type[i] = capture_type(fd[i]);
		lat[i] = malloc(sizeof(uint64_t) * max);
	}
	if (!lat[0] || !lat[1])
		die("malloc");
	deadline = now_ns() + (uint64_t)(seconds * 1e9);
	while (n < max && now_ns() < deadline) {
		for (i = 0; i < 2; i++) {
			int node = (int)(n & 1) ^ i;	/* ab, then ba */
			uint64_t c0 = thread_cpu_ns(), t0 = now_ns(), t1;

			if (do_op(fd[node], op, type[node]))
				die(op_name(op));
			t1 = now_ns();
			lat[node][n] = t1 - t0;
			cpu[node] += thread_cpu_ns() - c0;
		}
		n++;
	}
	pair_ratio = median_ratio(lat[0], lat[1], n);
	for (i = 0; i < 2; i++) {
		qsort(lat[i], n, sizeof(uint64_t), cmp_u64);
		close(fd[i]);
	}
	printf("{\"test\": \"alternate\", \"op\": \"%s\", \"pairs\": %zu, "
	       "\"a_p50_us\": %.2f, \"b_p50_us\": %.2f, \"a_cpu_us_per_op\": %.2f, "
	       "\"b_cpu_us_per_op\": %.2f, \"pair_p50_ratio\": %.3f}\n",
	       op_name(op), n, quantile_us(lat[0], n, 0.5), quantile_us(lat[1], n, 0.5),
	       n ? cpu[0] / 1000.0 / n : 0, n ? cpu[1] / 1000.0 / n : 0, pair_ratio);
	free(lat[0]);
	free(lat[1]);
	return 0;
}

/*
 * open() and close() of DEV (a) and DEV2 (b) in turn, COUNT pairs in
 * alternating order, as bench_alternate does for an ioctl.
 */
static int bench_alternate_openclose(const char *dev2, int count)
{
	const char *path[2] = { dev, dev2 };
	uint64_t *lat[2][2], *sorted;
	int i, k, node;

	for (k = 0; k < 2; k++)
		for (node = 0; node < 2; node++)
			if (!(lat[k][node] = calloc(count, sizeof(uint64_t))))
				die("calloc");
	for (i = 0; i < count; i++) {
		for (k = 0; k < 2; k++) {
			uint64_t t0, t1, t2;
			int fd;

			node = (i & 1) ^ k;	/* ab, then ba */
			t0 = now_ns();
			fd = open(path[node], O_RDWR);
			t1 = now_ns();
			if (fd < 0)
				die(path[node]);
			close(fd);
			t2 = now_ns();
			lat[0][node][i] = t1 - t0;
			lat[1][node][i] = t2 - t1;
		}
	}
	printf("{\"test\": \"alternate\", \"op\": \"openclose\", \"pairs\": %d", count);
	for (k = 0; k < 2; k++) {
		const char *what = k ? "close" : "open";

		printf(", \"%s_pair_p50_ratio\": %.3f", what,
		       median_ratio(lat[k][0], lat[k][1], count));
		for (node = 0; node < 2; node++) {
			sorted = lat[k][node];
			qsort(sorted, count, sizeof(uint64_t), cmp_u64);
			printf(", \"%c_%s_p50_us\": %.2f", "ab"[node], what, quantile_us(sorted, count, 0.5));
		}
	}
	printf("}\n");
	for (k = 0; k < 2; k++)
		for (node = 0; node < 2; node++)
			free(lat[k][node]);
	return 0;
}

/*
 * Runs CMD and reports the guest CPU time it took together with
 * everything else the guest did meanwhile (the driver's work in other
 * tasks), measured as the other tests measure it: CMD's own time from
 * wait4(), the other tasks' from scan_tasks(). Exits with CMD's status.
 */
static int bench_cpu(char **cmd)
{
	struct rusage ru;
	uint64_t t0, t1, others;
	double own;
	pid_t pid;
	int st;

	scan_tasks(&scan0);
	t0 = now_ns();
	pid = fork();
	if (pid < 0)
		die("fork");
	if (!pid) {
		execvp(cmd[0], cmd);
		perror(cmd[0]);
		_exit(127);
	}
	if (wait4(pid, &st, 0, &ru) < 0)
		die("wait4");
	t1 = now_ns();
	scan_tasks(&scan1);
	others = tasks_delta_ns(&scan0, &scan1);
	own = (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 + ru.ru_utime.tv_usec + ru.ru_stime.tv_usec;
	printf("{\"test\": \"cpu\", \"seconds\": %.6f, \"command_cpu_us\": %.1f, "
	       "\"guest_cpu_us\": %.1f}\n", (t1 - t0) / 1e9, own, own + others / 1e3);
	if (!WIFEXITED(st))
		return 1;
	return WEXITSTATUS(st);
}

/* An ioctl test's OP argument; usage() for any other. */
static enum op parse_op(const char *o)
{
	if (!strcmp(o, "G_FMT"))
		return OP_G_FMT;
	if (!strcmp(o, "G_EXT_CTRLS"))
		return OP_G_EXT_CTRLS;
	if (!strcmp(o, "QUERYCAP"))
		return OP_QUERYCAP;
	usage();
	return OP_G_FMT;
}

int main(int argc, char **argv)
{
	int a = 1;

	if (argc > 2 && !strcmp(argv[1], "-d")) {
		dev = argv[2];
		a = 3;
	}
	if (argc - a < 1)
		usage();
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (!strcmp(argv[a], "ioctl") && argc - a == 5) {
		enum op op = parse_op(argv[a + 1]);
		int sessions = atoi(argv[a + 2]);
		double seconds = atof(argv[a + 4]);

		if (sessions < 1 || sessions > MAX_SESSIONS || seconds <= 0 ||
		    (strcmp(argv[a + 3], "threads") && strcmp(argv[a + 3], "procs")))
			usage();
		return bench_ioctl(op, sessions, !strcmp(argv[a + 3], "procs"), seconds);
	}
	if (!strcmp(argv[a], "alternate") && argc - a == 4 && !strcmp(argv[a + 2], "openclose") &&
	    atoi(argv[a + 3]) > 0)
		return bench_alternate_openclose(argv[a + 1], atoi(argv[a + 3]));
	if (!strcmp(argv[a], "alternate") && argc - a == 4 && atof(argv[a + 3]) > 0)
		return bench_alternate(argv[a + 1], parse_op(argv[a + 2]), atof(argv[a + 3]));
	if (!strcmp(argv[a], "cpu") && argc - a >= 2)
		return bench_cpu(argv + a + 1);
	if (!strcmp(argv[a], "openclose") && argc - a == 2 && atoi(argv[a + 1]) > 0)
		return bench_openclose(atoi(argv[a + 1]));
	if (!strcmp(argv[a], "mmap") && argc - a == 2 && atoi(argv[a + 1]) > 0)
		return bench_mmap(atoi(argv[a + 1]));
	if (!strcmp(argv[a], "stream") && argc - a == 5 && atof(argv[a + 4]) > 0) {
		enum v4l2_memory mem;

		if (!strcmp(argv[a + 1], "mmap"))
			mem = V4L2_MEMORY_MMAP;
		else if (!strcmp(argv[a + 1], "userptr"))
			mem = V4L2_MEMORY_USERPTR;
		else
			usage();
		return bench_stream(mem, atoi(argv[a + 2]), atoi(argv[a + 3]), atof(argv[a + 4]));
	}
	usage();
	return 2;
}
