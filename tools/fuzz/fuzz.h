/* SPDX-License-Identifier: GPL-2.0 */
/*
 * v4l2-fuzz: what the worker loop (v4l2-fuzz.c) and the argument
 * generators (v4l2-args.c) share.
 */
#ifndef V4L2_FUZZ_H
#define V4L2_FUZZ_H

#include <stddef.h>
#include <stdint.h>

/* splitmix64, as in the test device's fuzzer: the same seed gives the same
 * calls on every build. */
struct rng {
	uint64_t s;
};

static inline uint64_t rnd(struct rng *r)
{
	uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Uniform in [0, n), 0 for n == 0. */
static inline uint64_t below(struct rng *r, uint64_t n)
{
	return n ? rnd(r) % n : 0;
}

/* True with probability p / 1000. */
static inline int chance(struct rng *r, unsigned int p)
{
	return below(r, 1000) < p;
}

#define PICK(r, arr) ((arr)[below((r), sizeof(arr) / sizeof((arr)[0]))])

/* Memory the generators point the kernel at. */
struct arenas {
	uint8_t *good;		/* read-write, GOOD_SIZE bytes */
	size_t good_size;
	uint8_t *ro;		/* read-only page */
	uint8_t *none;		/* PROT_NONE page: every access faults */
	uint8_t *edge;		/* read-write page followed by `none` */
	uint8_t *shmem;		/* MAP_SHARED memfd mapping, SHMEM_SIZE */
	size_t shmem_size;
};

/* What a process's workers learn as they go (shared by its threads). */
struct learned {
	uint32_t offsets[64];	/* MMAP offsets QUERYBUF/EXPBUF saw */
	int dmabufs[8];		/* dma-buf fds (EXPBUF, udmabuf) */
	int other_fds[4];	/* a pipe, /dev/null, a memfd: wrong fds */
};

/* Fills `arg` (of `size` bytes) for ioctl `code`: a struct-aware guess
 * for the ioctls the driver handles, noise for the rest. Returns the
 * pointer to pass: usually `arg`, sometimes a bad one. */
void *gen_ioctl_arg(struct rng *r, unsigned long code, void *arg, size_t size,
		    const struct arenas *a, struct learned *l);

/* One ioctl code: a V4L2 one (weighted towards buffers and streaming),
 * or one the driver must refuse. */
unsigned long gen_ioctl_code(struct rng *r);

/* Name of an ioctl code for logs ("VIDIOC_QBUF", or the number). */
const char *ioctl_name(unsigned long code, char *buf, size_t len);

/* After a successful ioctl: remember MMAP offsets and exported fds. */
void learn_from(unsigned long code, const void *arg, struct learned *l);

#endif
