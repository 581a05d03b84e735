// SPDX-License-Identifier: GPL-2.0
/*
 * v4l2-fuzz: hostile programs for a V4L2 driver.
 *
 *   v4l2-fuzz [-s SEED] [-n CALLS] [-t SECONDS] [-p PROCS] [-j THREADS]
 *             [-f PERMILLE] [-l SECONDS] [-i MS] [-v] DEVICE...
 *
 * PROCS processes of THREADS threads each make CALLS calls (or stop after
 * SECONDS): every V4L2 ioctl with struct-aware random and boundary
 * arguments (v4l2-args.c) and ioctls the driver must refuse, open, close,
 * dup2 onto fds other threads use, mmap, munmap (whole, split), mremap,
 * madvise, touching mappings, poll, reads, udmabuf dma-bufs to import,
 * short streaming sequences (REQBUFS, QUERYBUF, mmap, QBUF, STREAMON,
 * DQBUF) that the random calls then disturb, and fork: children inherit
 * fds and mappings, make a few calls and exit. The threads of a process
 * share its fds and mappings with no lock around the calls, so close,
 * dup2, munmap and exit race against STREAMON/OFF, REQBUFS, QBUF/DQBUF
 * and poll. With -f, PERMILLE of the calls run with fault injection:
 * /proc/thread-self/fail-nth makes the n-th allocation of that call fail.
 *
 * The calls a worker makes and their arguments depend only on the seed
 * (worker w of process p uses splitmix64(SEED, p, w)); what they find
 * (fds, offsets) depends on timing.
 *
 * A watchdog interrupts (SIGUSR1) any call still running after -i MS
 * (default 2000; 0: never) (a blocking DQBUF waits for frames that may
 * never come) and reports one
 * still running after -l SECONDS (default 15): the driver's commands time
 * out after 5 s, so such a call is stuck. Prints the calls made, per kind,
 * and exits 1 if a call got stuck or a worker died.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/rseq.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>
#include <linux/udmabuf.h>
#include <linux/videodev2.h>

#include "fuzz.h"

#define MAX_SLOTS 256
#define NFD 8
#define NMAP 16
#define MAX_CHILDREN 3
#define CHILD_CALLS 40
#define SCRATCH 16384
#define GOOD_SIZE (16 << 20)
#define SHMEM_SIZE (1 << 20)

enum op {
	OP_IOCTL, OP_STREAM, OP_OPEN, OP_CLOSE, OP_DUP, OP_MMAP, OP_MUNMAP,
	OP_MREMAP, OP_MADVISE, OP_TOUCH, OP_POLL, OP_FORK, OP_READ, OP_UDMABUF,
	NOPS
};
static const char *const op_names[NOPS] = {
	"ioctl", "stream", "open", "close", "dup2", "mmap", "munmap", "mremap",
	"madvise", "touch", "poll", "fork", "read", "udmabuf",
};
/* Weights of the operations; a forked child makes no forks. */
static const unsigned int op_weights[NOPS] = { 60, 3, 7, 4, 3, 6, 4, 2, 2, 3, 4, 1, 1, 1 };

/* One task making calls, seen by the watchdog (shared memory). */
struct slot {
	int used, pid, tid;
	int op;			/* op + 1 while in a call, 0 between calls */
	int nth;		/* fail-nth armed for the call, 0: none */
	unsigned long code;
	uint64_t start_ms, signalled_ms;
	int reported;
};

struct shared {
	struct slot slots[MAX_SLOTS];
	uint64_t calls[NOPS], failed[NOPS], ioctls_ok;
	uint64_t ioctl_errno[134];	/* failed ioctls by errno */
	uint64_t faults_armed, faults_injected, interrupts, hangs, forks, sequences;
	int stop;
};

/* Per process, shared by its threads. */
struct proc {
	int fds[NFD];
	pthread_mutex_t maps_lock;
	struct { uint8_t *addr; size_t len; } maps[NMAP];
	struct learned learned;
	struct arenas arenas;
	int children;
};

struct worker {
	struct rng rng;
	struct slot *slot;
	struct proc *proc;
	uint8_t *scratch;
	int failnth;
	int is_child;
};

static struct shared *shared;
static const char **devices;
static int ndevices, verbose, fault_permille;
static uint64_t calls_per_worker = 2000, interrupt_ms = 2000;
static __thread sigjmp_buf *touch_jmp;

static uint64_t now_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000 + (uint64_t)t.tv_nsec / 1000000;
}

static void on_usr1(int sig) { (void)sig; }

static __thread struct worker *current_worker;

static void on_fault(int sig, siginfo_t *info, void *uc)
{
	char msg[200];
	int len;

	if (touch_jmp)
		siglongjmp(*touch_jmp, 1);
	/* A fault of the fuzzer itself: say where, then die of it. */
	len = snprintf(msg, sizeof(msg), "v4l2-fuzz: task %ld: signal %d code %d at %p, rip %#llx rsp %#llx, op %d code %#lx\n",
		       syscall(SYS_gettid), sig, info->si_code, info->si_addr,
		       (unsigned long long)((ucontext_t *)uc)->uc_mcontext.gregs[REG_RIP],
		       (unsigned long long)((ucontext_t *)uc)->uc_mcontext.gregs[REG_RSP],
		       current_worker && current_worker->slot ? current_worker->slot->op - 1 : -1,
		       current_worker && current_worker->slot ? current_worker->slot->code : 0UL);
	if (write(2, msg, (size_t)len) < 0)
		len = 0;
	signal(sig, SIG_DFL);
	raise(sig);
}

/*
 * What the kernel writes into a task's memory by itself, on the way out of
 * a call and so before end() disarms fail-nth, must not need memory: that
 * allocation could be the one that fails, and the kernel kills a task it
 * cannot deliver a signal to, or whose rseq area it cannot update, with
 * SIGSEGV, a death that says nothing of the driver (F3 in
 * Documentation/fuzzing.rst):
 *  - signal frames: every task takes its signals on its own stack, whose
 *    pages are present, locked, and not shared copy-on-write with a forked
 *    child (MADV_WIPEONFORK: the child gets zeroes there, and makes its
 *    own stack); a fresh page, or a shared one after a fork, needs a page
 *    to write the frame into;
 *  - rseq: glibc registers each thread's rseq area (in its thread control
 *    block), which the kernel updates after the task was scheduled; after
 *    a fork that page is shared copy-on-write. The fuzzer does not use
 *    rseq: each task unregisters it (rseq_off).
 */
static void task_setup(void)
{
	size_t size = 64 * 1024;
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	stack_t ss = { .ss_size = size };

	if (p == MAP_FAILED) {
		perror("v4l2-fuzz: signal stack");
		exit(2);
	}
	if (madvise(p, size, MADV_WIPEONFORK) != 0)
		perror("v4l2-fuzz: MADV_WIPEONFORK on the signal stack");
	memset(p, 0, size);
	if (mlock(p, size) != 0)
		perror("v4l2-fuzz: mlock of the signal stack");
	ss.ss_sp = p;
	if (sigaltstack(&ss, NULL) != 0) {
		perror("v4l2-fuzz: sigaltstack");
		exit(2);
	}
}

/* A thread glibc started unregisters its rseq area (see task_setup); a
 * forked child has none then. glibc registers 32 bytes (the first struct
 * rseq) even where __rseq_size says fewer, and the length must match. */
static void rseq_off(void)
{
	char *area = (char *)__builtin_thread_pointer() + __rseq_offset;

	if (__rseq_size && syscall(SYS_rseq, area, 32, RSEQ_FLAG_UNREGISTER, RSEQ_SIG) != 0 &&
	    syscall(SYS_rseq, area, __rseq_size, RSEQ_FLAG_UNREGISTER, RSEQ_SIG) != 0)
		perror("v4l2-fuzz: rseq unregister");
}

static struct slot *take_slot(void)
{
	for (int i = 0; i < MAX_SLOTS; i++) {
		int free_ = 0;

		if (__atomic_compare_exchange_n(&shared->slots[i].used, &free_, 1, 0,
						__ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
			struct slot *s = &shared->slots[i];

			s->pid = getpid();
			s->tid = (int)syscall(SYS_gettid);
			s->op = 0;
			s->reported = 0;
			return s;
		}
	}
	return NULL;
}

static void release_slot(struct slot *s)
{
	if (s)
		__atomic_store_n(&s->used, 0, __ATOMIC_RELEASE);
}

/* Brackets one call: the watchdog sees it, fail-nth may be armed for it. */
static int begin(struct worker *w, enum op op, unsigned long code)
{
	int nth = 0;

	if (w->failnth >= 0 && chance(&w->rng, (unsigned int)fault_permille)) {
		char buf[16];
		int len;

		/* Small n most often: the first allocations of a call are the
		 * ones its error paths start from. */
		nth = 1 + (int)(below(&w->rng, 4) ? below(&w->rng, 8) : below(&w->rng, 64));
		len = snprintf(buf, sizeof(buf), "%d", nth);
		if (pwrite(w->failnth, buf, (size_t)len, 0) == len)
			__atomic_fetch_add(&shared->faults_armed, 1, __ATOMIC_RELAXED);
		else
			nth = 0;
	}
	if (w->slot) {
		w->slot->nth = nth;
		w->slot->code = code;
		w->slot->start_ms = now_ms();
		w->slot->signalled_ms = 0;
		__atomic_store_n(&w->slot->op, op + 1, __ATOMIC_RELEASE);
	}
	return nth;
}

static long end(struct worker *w, enum op op, int nth, long ret)
{
	int err = errno;

	if (w->slot)
		__atomic_store_n(&w->slot->op, 0, __ATOMIC_RELEASE);
	if (nth) {
		char buf[16] = "";

		/* 0: the fault was injected; disarm it either way. */
		if (pread(w->failnth, buf, sizeof(buf) - 1, 0) > 0 && atoi(buf) == 0)
			__atomic_fetch_add(&shared->faults_injected, 1, __ATOMIC_RELAXED);
		if (pwrite(w->failnth, "0", 1, 0) != 1)
			w->failnth = -1;
	}
	__atomic_fetch_add(&shared->calls[op], 1, __ATOMIC_RELAXED);
	if (ret < 0)
		__atomic_fetch_add(&shared->failed[op], 1, __ATOMIC_RELAXED);
	errno = err;
	return ret;
}

/* An fd of the process's table: mostly one that is open. */
static int get_fd(struct worker *w)
{
	unsigned int i = (unsigned int)below(&w->rng, NFD);

	for (int tries = chance(&w->rng, 900) ? NFD : 1; tries > 0; tries--, i = (i + 1) % NFD) {
		int fd = __atomic_load_n(&w->proc->fds[i], __ATOMIC_RELAXED);

		if (fd >= 0 || tries == 1)
			return fd;
	}
	return -1;
}

/* Puts `fd` in slot i, closing what was there (other threads may still be
 * using it: that is the point). */
static void put_fd(struct proc *p, unsigned int i, int fd)
{
	int old = __atomic_exchange_n(&p->fds[i], fd, __ATOMIC_RELAXED);

	if (old >= 0)
		close(old);
}

static void learn_fd(int *table, unsigned int n, struct rng *r, int fd)
{
	int old = __atomic_exchange_n(&table[below(r, n)], fd, __ATOMIC_RELAXED);

	if (old >= 0 && old != fd)
		close(old);
}

/* Map table: entries are taken out while used, so no two threads unmap
 * the same range and nobody unmaps memory that is not a fuzzer mapping. */
static int take_map(struct proc *p, struct rng *r, uint8_t **addr, size_t *len)
{
	unsigned int i = (unsigned int)below(r, NMAP);
	int found = 0;

	pthread_mutex_lock(&p->maps_lock);
	if (p->maps[i].addr) {
		*addr = p->maps[i].addr;
		*len = p->maps[i].len;
		p->maps[i].addr = NULL;
		found = 1;
	}
	pthread_mutex_unlock(&p->maps_lock);
	return found;
}

static void put_map(struct proc *p, uint8_t *addr, size_t len)
{
	len = (len + 4095) & ~(size_t)4095;	/* what the kernel mapped */
	pthread_mutex_lock(&p->maps_lock);
	for (int i = 0; i < NMAP; i++) {
		if (!p->maps[i].addr) {
			p->maps[i].addr = addr;
			p->maps[i].len = len;
			addr = NULL;
			break;
		}
	}
	pthread_mutex_unlock(&p->maps_lock);
	if (addr)
		munmap(addr, len);	/* table full */
}

static void do_ioctl(struct worker *w, int fd, unsigned long code)
{
	struct rng *r = &w->rng;
	char name[32];
	void *arg = gen_ioctl_arg(r, code, w->scratch, _IOC_SIZE(code), &w->proc->arenas, &w->proc->learned);
	int nth = begin(w, OP_IOCTL, code);
	long ret = end(w, OP_IOCTL, nth, ioctl(fd, code, arg));

	if (ret < 0)
		__atomic_fetch_add(&shared->ioctl_errno[errno > 0 && errno < 134 ? errno : 0], 1, __ATOMIC_RELAXED);

	if (verbose)
		fprintf(stderr, "[%d] %s fd %d -> %ld %s\n", (int)syscall(SYS_gettid),
			ioctl_name(code, name, sizeof(name)), fd, ret, ret < 0 ? strerror(errno) : "");
	if (ret == 0 && arg == w->scratch) {
		__atomic_fetch_add(&shared->ioctls_ok, 1, __ATOMIC_RELAXED);
		if (code == VIDIOC_EXPBUF) {
			learn_fd(w->proc->learned.dmabufs, 8, r, ((struct v4l2_exportbuffer *)arg)->fd);
			return;
		}
		learn_from(code, arg, &w->proc->learned);
	}
}

/* A plain ioctl with a known argument, counted like the random ones. */
static long simple_ioctl(struct worker *w, int fd, unsigned long code, void *arg)
{
	int nth = begin(w, OP_IOCTL, code);

	return end(w, OP_IOCTL, nth, ioctl(fd, code, arg));
}

/* A short, mostly valid streaming sequence on one fd, so the random calls
 * find queues with buffers, mappings and streams to disturb. */
static void do_stream(struct worker *w)
{
	struct rng *r = &w->rng;
	int fd = get_fd(w);
	uint32_t type = below(r, 2) ? V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE : V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE;
	uint32_t memory = PICK(r, ((const uint32_t[]){ V4L2_MEMORY_MMAP, V4L2_MEMORY_MMAP,
						       V4L2_MEMORY_USERPTR, V4L2_MEMORY_DMABUF }));
	struct v4l2_format fmt = { .type = type };
	struct v4l2_requestbuffers req = { .count = 2 + (uint32_t)below(r, 3), .type = type, .memory = memory };
	struct v4l2_plane planes[VIDEO_MAX_PLANES];
	struct v4l2_buffer buf;
	unsigned int nplanes = 1;
	uint32_t size = 614400;

	__atomic_fetch_add(&shared->sequences, 1, __ATOMIC_RELAXED);
	if (simple_ioctl(w, fd, VIDIOC_G_FMT, &fmt) == 0) {
		nplanes = fmt.fmt.pix_mp.num_planes ? fmt.fmt.pix_mp.num_planes : 1;
		if (nplanes > VIDEO_MAX_PLANES)
			nplanes = 1;
		size = fmt.fmt.pix_mp.plane_fmt[0].sizeimage;
	}
	if (size == 0 || size > GOOD_SIZE / 8)
		size = 614400;
	if (simple_ioctl(w, fd, VIDIOC_REQBUFS, &req) < 0)
		return;
	for (uint32_t i = 0; i < req.count && i < 8; i++) {
		memset(&buf, 0, sizeof(buf));
		memset(planes, 0, sizeof(planes));
		buf.index = i;
		buf.type = type;
		buf.memory = memory;
		buf.length = nplanes;
		buf.m.planes = planes;
		if (simple_ioctl(w, fd, VIDIOC_QUERYBUF, &buf) < 0)
			return;
		for (unsigned int p = 0; p < nplanes; p++) {
			if (memory == V4L2_MEMORY_MMAP && chance(r, 700)) {
				int nth = begin(w, OP_MMAP, 0);
				void *m = mmap(NULL, planes[p].length, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
					       planes[p].m.mem_offset);

				end(w, OP_MMAP, nth, m == MAP_FAILED ? -1 : 0);
				if (m != MAP_FAILED)
					put_map(w->proc, m, planes[p].length);
			} else if (memory == V4L2_MEMORY_USERPTR) {
				planes[p].m.userptr = (uintptr_t)w->proc->arenas.good +
					((i * nplanes + p) % 8) * (GOOD_SIZE / 8);
				planes[p].length = size;
			} else if (memory == V4L2_MEMORY_DMABUF) {
				planes[p].m.fd = PICK(r, w->proc->learned.dmabufs);
				planes[p].length = 0;
			}
			planes[p].bytesused = type == V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE ? planes[p].length : 0;
		}
		simple_ioctl(w, fd, VIDIOC_QBUF, &buf);
	}
	simple_ioctl(w, fd, VIDIOC_STREAMON, &type);
	for (int k = 0; k < 4; k++) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN | POLLOUT | POLLPRI };
		int nth = begin(w, OP_POLL, 0);

		end(w, OP_POLL, nth, poll(&pfd, 1, 10));
		memset(&buf, 0, sizeof(buf));
		buf.type = type;
		buf.memory = memory;
		buf.length = VIDEO_MAX_PLANES;
		buf.m.planes = planes;
		if (simple_ioctl(w, fd, VIDIOC_DQBUF, &buf) == 0)
			simple_ioctl(w, fd, VIDIOC_QBUF, &buf);
	}
	if (chance(r, 500)) {
		simple_ioctl(w, fd, VIDIOC_STREAMOFF, &type);
		req.count = 0;
		simple_ioctl(w, fd, VIDIOC_REQBUFS, &req);
	}
}

static void do_touch(struct worker *w)
{
	uint8_t *addr;
	size_t len;
	sigjmp_buf jb;

	if (!take_map(w->proc, &w->rng, &addr, &len))
		return;
	volatile size_t off = below(&w->rng, len);
	int nth = begin(w, OP_TOUCH, 0);

	touch_jmp = &jb;
	if (sigsetjmp(jb, 1) == 0) {
		if (below(&w->rng, 2))
			addr[off] ^= 0x5a;
		else
			(void)*(volatile uint8_t *)&addr[off];
		touch_jmp = NULL;
		end(w, OP_TOUCH, nth, 0);
	} else {
		touch_jmp = NULL;	/* SIGSEGV or SIGBUS: a mapping the kernel refused */
		end(w, OP_TOUCH, nth, -1);
	}
	put_map(w->proc, addr, len);
}

static void do_udmabuf(struct worker *w)
{
	struct udmabuf_create c = { .flags = UDMABUF_FLAGS_CLOEXEC, .size = 1 << 20 };
	int dev = open("/dev/udmabuf", O_RDWR);
	int mfd = memfd_create("fuzz-udmabuf", MFD_ALLOW_SEALING);

	if (dev >= 0 && mfd >= 0 && ftruncate(mfd, 1 << 20) == 0 &&
	    fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK) == 0) {
		int nth;

		c.memfd = (uint32_t)mfd;
		nth = begin(w, OP_UDMABUF, 0);
		int fd = (int)end(w, OP_UDMABUF, nth, ioctl(dev, UDMABUF_CREATE, &c));

		if (fd >= 0)
			learn_fd(w->proc->learned.dmabufs, 8, &w->rng, fd);
	}
	if (dev >= 0)
		close(dev);
	if (mfd >= 0)
		close(mfd);
}

static void run_calls(struct worker *w, uint64_t n);

static void do_fork(struct worker *w)
{
	struct proc *p = w->proc;
	uint64_t child_seed = rnd(&w->rng);
	pid_t pid;
	int nth;

	if (w->is_child || __atomic_load_n(&p->children, __ATOMIC_RELAXED) >= MAX_CHILDREN)
		return;
	nth = begin(w, OP_FORK, 0);
	pid = fork();
	if (pid == 0) {
		/* The child: other threads' locks are gone with them. */
		struct worker c = { .rng = { child_seed }, .proc = p, .scratch = w->scratch, .is_child = 1 };

		task_setup();
		pthread_mutex_init(&p->maps_lock, NULL);
		c.slot = take_slot();
		current_worker = &c;
		c.failnth = open("/proc/thread-self/fail-nth", O_RDWR);
		run_calls(&c, CHILD_CALLS);
		release_slot(c.slot);
		_exit(0);
	}
	end(w, OP_FORK, nth, pid);
	if (pid > 0) {
		__atomic_fetch_add(&p->children, 1, __ATOMIC_RELAXED);
		__atomic_fetch_add(&shared->forks, 1, __ATOMIC_RELAXED);
	}
}

static void one_call(struct worker *w)
{
	struct rng *r = &w->rng;
	struct proc *p = w->proc;
	unsigned int pick, op, total = 0;
	uint8_t *addr;
	size_t len;
	int nth, fd;

	for (op = 0; op < NOPS; op++)
		total += op_weights[op];
	pick = (unsigned int)below(r, total);
	for (op = 0; op < NOPS - 1 && pick >= op_weights[op]; op++)
		pick -= op_weights[op];

	switch (op) {
	case OP_IOCTL:
		/* Mostly a video fd; sometimes a dma-buf, a pipe, nothing
		 * (never the console on 0-2). */
		fd = chance(r, 950) ? get_fd(w) : 3 + (int)below(r, 40);
		do_ioctl(w, fd, gen_ioctl_code(r));
		break;
	case OP_STREAM:
		do_stream(w);
		break;
	case OP_OPEN: {
		const char *dev = devices[below(r, (uint64_t)ndevices)];
		int flags = (chance(r, 950) ? O_RDWR : O_RDONLY) | (chance(r, 700) ? O_NONBLOCK : 0);

		nth = begin(w, OP_OPEN, 0);
		fd = (int)end(w, OP_OPEN, nth, open(dev, flags));
		if (fd >= 0)
			put_fd(p, (unsigned int)below(r, NFD), fd);
		break;
	}
	case OP_CLOSE:
		fd = __atomic_exchange_n(&p->fds[below(r, NFD)], -1, __ATOMIC_RELAXED);
		nth = begin(w, OP_CLOSE, 0);
		end(w, OP_CLOSE, nth, close(fd));
		break;
	case OP_DUP: {
		/* dup2 onto an fd another thread may be using: the file it
		 * pointed to is released under its feet. */
		int from = get_fd(w), to = get_fd(w);

		nth = begin(w, OP_DUP, 0);
		fd = (int)end(w, OP_DUP, nth, to >= 0 && chance(r, 500) ? dup2(from, to) : dup(from));
		if (fd >= 0 && fd != to)
			put_fd(p, (unsigned int)below(r, NFD), fd);
		break;
	}
	case OP_MMAP: {
		static const size_t lens[] = { 4096, 8192, 460800, 614400, 1 << 20, 4 << 20, 64 << 20 };
		static const int prots[] = { PROT_READ | PROT_WRITE, PROT_READ | PROT_WRITE, PROT_READ,
					     PROT_WRITE, PROT_NONE };
		size_t l = PICK(r, lens);
		off_t off = chance(r, 800) ? (off_t)PICK(r, p->learned.offsets) : (off_t)(below(r, 1 << 20) << 12);
		int flags = chance(r, 900) ? MAP_SHARED : MAP_PRIVATE;
		void *m;

		fd = get_fd(w);
		nth = begin(w, OP_MMAP, 0);
		m = mmap(NULL, l, PICK(r, prots), flags, fd, off);
		end(w, OP_MMAP, nth, m == MAP_FAILED ? -1 : 0);
		if (m != MAP_FAILED)
			put_map(p, m, l);
		break;
	}
	case OP_MUNMAP:
		if (take_map(p, r, &addr, &len)) {
			size_t pages = len / 4096, at = below(r, pages), n = 1 + below(r, pages - at);

			if (chance(r, 500)) {
				at = 0;
				n = pages;
			}
			nth = begin(w, OP_MUNMAP, 0);
			end(w, OP_MUNMAP, nth, munmap(addr + at * 4096, n * 4096));
			/* What is left on both sides stays mapped. */
			if (at > 0)
				put_map(p, addr, at * 4096);
			if (at + n < pages)
				put_map(p, addr + (at + n) * 4096, (pages - at - n) * 4096);
		}
		break;
	case OP_MREMAP:
		if (take_map(p, r, &addr, &len)) {
			size_t new_len = PICK(r, ((const size_t[]){ 4096, len / 2, len + 4096, 2 * len }));
			void *m;

			new_len = (new_len + 4095) & ~(size_t)4095;
			nth = begin(w, OP_MREMAP, 0);
			m = mremap(addr, len, new_len ? new_len : 4096, chance(r, 800) ? MREMAP_MAYMOVE : 0);
			end(w, OP_MREMAP, nth, m == MAP_FAILED ? -1 : 0);
			if (m != MAP_FAILED)
				put_map(p, m, new_len ? new_len : 4096);
			else
				put_map(p, addr, len);
		}
		break;
	case OP_MADVISE:
		if (take_map(p, r, &addr, &len)) {
			static const int advice[] = { MADV_DONTNEED, MADV_DONTFORK, MADV_DOFORK, MADV_WIPEONFORK,
						      MADV_PAGEOUT, MADV_COLD };

			nth = begin(w, OP_MADVISE, 0);
			if (chance(r, 700))
				end(w, OP_MADVISE, nth, madvise(addr, len, PICK(r, advice)));
			else
				end(w, OP_MADVISE, nth, mprotect(addr, len, below(r, 2) ? PROT_READ : PROT_NONE));
			put_map(p, addr, len);
		}
		break;
	case OP_TOUCH:
		do_touch(w);
		break;
	case OP_POLL: {
		struct pollfd pfds[3];
		int n = 1 + (int)below(r, 3);

		for (int i = 0; i < n; i++) {
			pfds[i].fd = get_fd(w);
			pfds[i].events = (short)PICK(r, ((const int[]){ POLLIN, POLLOUT, POLLPRI,
									POLLIN | POLLOUT | POLLPRI, 0xffff }));
		}
		nth = begin(w, OP_POLL, 0);
		end(w, OP_POLL, nth, poll(pfds, (nfds_t)n, (int)below(r, 20)));
		break;
	}
	case OP_FORK:
		do_fork(w);
		break;
	case OP_READ: {
		char b[64];

		fd = get_fd(w);
		nth = begin(w, OP_READ, 0);
		end(w, OP_READ, nth, below(r, 2) ? read(fd, b, sizeof(b)) : write(fd, b, sizeof(b)));
		break;
	}
	case OP_UDMABUF:
		do_udmabuf(w);
		break;
	}
}

static void run_calls(struct worker *w, uint64_t n)
{
	for (uint64_t i = 0; i < n && !__atomic_load_n(&shared->stop, __ATOMIC_RELAXED); i++) {
		one_call(w);
		/* Reap this process's children that exited. */
		while (!w->is_child && waitpid(-1, NULL, WNOHANG) > 0)
			__atomic_fetch_sub(&w->proc->children, 1, __ATOMIC_RELAXED);
	}
}

struct thread_arg {
	struct proc *proc;
	uint64_t seed;
};

static void *worker_thread(void *v)
{
	struct thread_arg *t = v;
	struct worker w = { .rng = { t->seed }, .proc = t->proc };

	task_setup();
	rseq_off();
	w.slot = take_slot();
	current_worker = &w;
	w.failnth = fault_permille ? open("/proc/thread-self/fail-nth", O_RDWR) : -1;
	w.scratch = mmap(NULL, SCRATCH, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (w.scratch != MAP_FAILED)
		run_calls(&w, calls_per_worker);
	release_slot(w.slot);
	return NULL;
}

/* `size` bytes (of `fd`, or anonymous) between two PROT_NONE guard areas
 * as large as the largest length the generators use: a buffer the kernel
 * is told runs past its end hits a guard and fails, instead of reaching
 * the fuzzer's own stacks and scratch memory (which the device would
 * then write frames into). */
#define GUARD (1 << 20)
static uint8_t *guarded(size_t size, int prot, int fd)
{
	uint8_t *base = mmap(NULL, size + 2 * GUARD, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	void *m;

	if (base == MAP_FAILED)
		return NULL;
	m = mmap(base + GUARD, size, prot, MAP_FIXED | (fd >= 0 ? MAP_SHARED : MAP_PRIVATE | MAP_ANONYMOUS), fd, 0);
	return m == MAP_FAILED ? NULL : m;
}

static void setup_arenas(struct arenas *a)
{
	uint8_t *two;
	int mfd;

	a->good_size = GOOD_SIZE;
	a->good = guarded(GOOD_SIZE, PROT_READ | PROT_WRITE, -1);
	a->ro = guarded(4096, PROT_READ, -1);
	two = guarded(8192, PROT_READ | PROT_WRITE, -1);
	if (!a->good || !a->ro || !two) {
		perror("v4l2-fuzz: mmap");
		exit(2);
	}
	memset(a->good, 0x11, GOOD_SIZE);
	mprotect(two + 4096, 4096, PROT_NONE);
	a->edge = two;
	a->none = two + 4096;
	a->shmem_size = SHMEM_SIZE;
	mfd = memfd_create("fuzz-shmem", 0);
	a->shmem = mfd >= 0 && ftruncate(mfd, SHMEM_SIZE) == 0 ? guarded(SHMEM_SIZE, PROT_READ | PROT_WRITE, mfd) : NULL;
	if (!a->shmem)
		a->shmem = a->good;
	if (mfd >= 0)
		close(mfd);
}

static void worker_process(int index, uint64_t seed, int threads)
{
	struct proc *p = calloc(1, sizeof(*p));
	pthread_t tids[64];
	struct thread_arg args[64];
	int pipefd[2];

	if (!p)
		exit(2);
	for (int i = 0; i < NFD; i++)
		p->fds[i] = -1;
	for (int i = 0; i < 8; i++)
		p->learned.dmabufs[i] = -1;
	pthread_mutex_init(&p->maps_lock, NULL);
	setup_arenas(&p->arenas);
	if (pipe(pipefd) == 0) {
		p->learned.other_fds[0] = pipefd[0];
		p->learned.other_fds[1] = pipefd[1];
	}
	p->learned.other_fds[2] = open("/dev/null", O_RDWR);
	p->learned.other_fds[3] = memfd_create("fuzz-other", 0);
	/* Half the table open from the start, each device in turn. */
	for (int i = 0; i < NFD / 2; i++)
		p->fds[i] = open(devices[(index + i) % ndevices], O_RDWR | (i % 2 ? O_NONBLOCK : 0));
	for (int t = 0; t < threads; t++) {
		struct rng mix = { seed ^ ((uint64_t)(index + 1) << 32) ^ (uint64_t)(t + 1) };

		args[t].proc = p;
		args[t].seed = rnd(&mix);
		if (pthread_create(&tids[t], NULL, worker_thread, &args[t]) != 0)
			threads = t;
	}
	for (int t = 0; t < threads; t++)
		pthread_join(tids[t], NULL);
	while (waitpid(-1, NULL, 0) > 0)
		;
	exit(0);
}

/* Fault injection through fail-nth fails only allocations the global
 * knobs allow: let it fail sleeping allocations and single pages too. */
static void setup_fault_injection(void)
{
	static const char *const knobs[][2] = {
		{ "/sys/kernel/debug/failslab/ignore-gfp-wait", "N" },
		{ "/sys/kernel/debug/failslab/verbose", "0" },
		{ "/sys/kernel/debug/fail_page_alloc/ignore-gfp-wait", "N" },
		{ "/sys/kernel/debug/fail_page_alloc/ignore-gfp-highmem", "N" },
		{ "/sys/kernel/debug/fail_page_alloc/min-order", "0" },
		{ "/sys/kernel/debug/fail_page_alloc/verbose", "0" },
	};

	for (unsigned int i = 0; i < sizeof(knobs) / sizeof(knobs[0]); i++) {
		int fd = open(knobs[i][0], O_WRONLY);

		if (fd < 0 || write(fd, knobs[i][1], strlen(knobs[i][1])) < 0)
			fprintf(stderr, "v4l2-fuzz: cannot set %s: %s\n", knobs[i][0], strerror(errno));
		if (fd >= 0)
			close(fd);
	}
	if (access("/proc/thread-self/fail-nth", W_OK) != 0) {
		fprintf(stderr, "v4l2-fuzz: no /proc/thread-self/fail-nth (CONFIG_FAULT_INJECTION): no faults\n");
		fault_permille = 0;
	}
}

/*
 * Disarms the fail-nth of a task about to be interrupted. A long call
 * (a blocking DQBUF or DQEVENT) makes no allocation while it waits, so
 * its fail-nth is still armed when the signal comes; it would then fail
 * an allocation of the signal's delivery or of the return from the
 * handler, and the kernel kills the task with SIGSEGV (SI_KERNEL): a
 * death the fuzzer caused itself. (The totals count such a call as
 * injected.)
 */
static void disarm_faults(int pid, int tid)
{
	char path[64];
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/fail-nth", pid, tid);
	fd = open(path, O_WRONLY);
	if (fd < 0)
		return;
	if (write(fd, "0", 1) != 1)
		perror("v4l2-fuzz: disarming fail-nth");
	close(fd);
}

static void report_stuck(struct slot *s, int op, uint64_t ms)
{
	char path[64], line[256], name[32];
	FILE *f;

	printf("HANG: task %d (process %d) in %s%s%s for %llu ms\n", s->tid, s->pid, op_names[op],
	       op == OP_IOCTL ? " " : "", op == OP_IOCTL ? ioctl_name(s->code, name, sizeof(name)) : "",
	       (unsigned long long)ms);
	snprintf(path, sizeof(path), "/proc/%d/task/%d/stack", s->pid, s->tid);
	if ((f = fopen(path, "r"))) {
		while (fgets(line, sizeof(line), f))
			printf("    %s", line);
		fclose(f);
	}
	fflush(stdout);
}

int main(int argc, char **argv)
{
	uint64_t seed = 1, seconds = 0, limit_ms = 15000, start, first_hang = 0;
	int procs = 2, threads = 4, opt, live = 0, died = 0;

	while ((opt = getopt(argc, argv, "s:n:t:p:j:f:l:i:v")) != -1) {
		switch (opt) {
		case 's': seed = strtoull(optarg, NULL, 0); break;
		case 'n': calls_per_worker = strtoull(optarg, NULL, 0); break;
		case 't': seconds = strtoull(optarg, NULL, 0); break;
		case 'p': procs = atoi(optarg); break;
		case 'j': threads = atoi(optarg); break;
		case 'f': fault_permille = atoi(optarg); break;
		case 'l': limit_ms = strtoull(optarg, NULL, 0) * 1000; break;
		case 'i': interrupt_ms = strtoull(optarg, NULL, 0); break;
		case 'v': verbose = 1; break;
		default:
			fprintf(stderr, "usage: %s [-s SEED] [-n CALLS] [-t SECONDS] [-p PROCS] [-j THREADS] "
				"[-f PERMILLE] [-l SECONDS] [-i MS] [-v] DEVICE...\n", argv[0]);
			return 2;
		}
	}
	if (optind >= argc || procs < 1 || procs > 16 || threads < 1 || threads > 16) {
		fprintf(stderr, "v4l2-fuzz: need a device, 1-16 processes and 1-16 threads\n");
		return 2;
	}
	devices = (const char **)&argv[optind];
	ndevices = argc - optind;
	shared = mmap(NULL, sizeof(*shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (shared == MAP_FAILED)
		return 2;
	if (fault_permille)
		setup_fault_injection();
	/* No SA_RESTART: calls return EINTR. On the signal stack. */
	struct sigaction sa = { .sa_handler = on_usr1, .sa_flags = SA_ONSTACK };

	sigaction(SIGUSR1, &sa, NULL);
	sa.sa_sigaction = on_fault;
	sa.sa_flags = SA_NODEFER | SA_SIGINFO | SA_ONSTACK;
	sigaction(SIGSEGV, &sa, NULL);
	sigaction(SIGBUS, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	printf("v4l2-fuzz: seed %llu, %d processes x %d threads x %llu calls%s, faults %d/1000, %d devices\n",
	       (unsigned long long)seed, procs, threads, (unsigned long long)calls_per_worker,
	       seconds ? " (or the time limit)" : "", fault_permille, ndevices);
	fflush(stdout);
	start = now_ms();
	for (int i = 0; i < procs; i++) {
		pid_t pid = fork();

		if (pid == 0)
			worker_process(i, seed, threads);
		if (pid < 0)
			perror("v4l2-fuzz: fork");
		else
			live++;
	}

	/* The watchdog: interrupts long calls, reports stuck ones, ends the
	 * run at the time limit. */
	while (live > 0) {
		uint64_t now = now_ms();
		int status;
		pid_t pid;

		while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
			live--;
			if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
				printf("FAIL: worker process %d ended with status %#x\n", pid, status);
				died++;
				/* Where each of its tasks was: what killed it is
				 * not always known (Documentation/fuzzing.rst, F3). */
				for (int i = 0; i < MAX_SLOTS; i++) {
					struct slot *s = &shared->slots[i];
					int op = __atomic_load_n(&s->op, __ATOMIC_ACQUIRE);

					if (s->pid != pid || !__atomic_load_n(&s->used, __ATOMIC_ACQUIRE))
						continue;
					if (op)
						printf("  task %d: in %s (%#lx) for %llu ms, fail-nth %d\n", s->tid,
						       op_names[op - 1], s->code,
						       (unsigned long long)(now - s->start_ms), s->nth);
					else
						printf("  task %d: between calls\n", s->tid);
				}
			}
			/* Its threads' slots are not in a call any more. */
			for (int i = 0; i < MAX_SLOTS; i++)
				if (shared->slots[i].pid == pid)
					__atomic_store_n(&shared->slots[i].used, 0, __ATOMIC_RELEASE);
		}
		if (seconds && now - start >= seconds * 1000)
			__atomic_store_n(&shared->stop, 1, __ATOMIC_RELAXED);
		for (int i = 0; i < MAX_SLOTS; i++) {
			struct slot *s = &shared->slots[i];
			uint64_t begun = s->start_ms;
			int op = __atomic_load_n(&s->op, __ATOMIC_ACQUIRE);

			if (!__atomic_load_n(&s->used, __ATOMIC_ACQUIRE) || !op)
				continue;
			if (now < begun + (interrupt_ms ? interrupt_ms : 2000))
				continue;
			if (interrupt_ms && now >= s->signalled_ms + 500) {
				disarm_faults(s->pid, s->tid);
				if (syscall(SYS_tgkill, s->pid, s->tid, SIGUSR1) < 0 && errno == ESRCH) {
					/* Gone (a forked child that died): not a call. */
					__atomic_store_n(&s->used, 0, __ATOMIC_RELEASE);
					continue;
				}
				s->signalled_ms = now;
				__atomic_fetch_add(&shared->interrupts, 1, __ATOMIC_RELAXED);
			}
			if (now >= begun + limit_ms && !s->reported) {
				s->reported = 1;
				shared->hangs++;
				report_stuck(s, op - 1, now - begun);
				if (!first_hang)
					first_hang = now;
				/* Stop the others: the run has failed. */
				__atomic_store_n(&shared->stop, 1, __ATOMIC_RELAXED);
			}
		}
		/* A stuck task never lets its process end: give up on it. */
		if (first_hang && now - first_hang > 20000) {
			printf("v4l2-fuzz: %d worker processes still running, not waiting for them\n", live);
			break;
		}
		usleep(100000);
	}

	uint64_t total = 0;

	for (int op = 0; op < NOPS; op++)
		total += shared->calls[op];
	/* The calls of the streaming sequences count as ioctls, mmaps, polls. */
	printf("v4l2-fuzz: %llu calls in %.1f s:", (unsigned long long)total, (now_ms() - start) / 1000.0);
	for (int op = 0; op < NOPS; op++)
		if (op != OP_STREAM)
			printf(" %s %llu (%llu failed)%s", op_names[op], (unsigned long long)shared->calls[op],
			       (unsigned long long)shared->failed[op], op + 1 < NOPS ? "," : "\n");
	printf("v4l2-fuzz: failed ioctls by errno:");
	for (int e = 0; e < 134; e++)
		if (shared->ioctl_errno[e])
			printf(" %s %llu", e ? strerrorname_np(e) : "other", (unsigned long long)shared->ioctl_errno[e]);
	printf("\n");
	printf("v4l2-fuzz: %llu ioctls succeeded; %llu streaming sequences; %llu forks; %llu faults armed, "
	       "%llu injected; %llu interrupts; %llu stuck calls; %d workers died\n",
	       (unsigned long long)shared->ioctls_ok, (unsigned long long)shared->sequences,
	       (unsigned long long)shared->forks,
	       (unsigned long long)shared->faults_armed, (unsigned long long)shared->faults_injected,
	       (unsigned long long)shared->interrupts, (unsigned long long)shared->hangs, died);
	return shared->hangs || died ? 1 : 0;
}
