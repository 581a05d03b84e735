// SPDX-License-Identifier: GPL-2.0
/*
 * v4l2-fuzz argument generators: for each V4L2 ioctl a struct filled with
 * values that matter to a driver (buffer types, memory types, counts,
 * indexes, plane counts, lengths, user pointers into good, read-only,
 * unmapped and half-mapped memory, real and wrong dma-buf fds), in the
 * spirit of syzkaller's V4L2 descriptions; noise for the rest.
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <linux/videodev2.h>

#include "fuzz.h"

static const uint32_t buf_types[] = {
	V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE, V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE,
	V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE, V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE,
	V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE, V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE,
	V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE, V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE,
	V4L2_BUF_TYPE_VIDEO_CAPTURE, V4L2_BUF_TYPE_VIDEO_OUTPUT,
	V4L2_BUF_TYPE_META_CAPTURE, V4L2_BUF_TYPE_VIDEO_OVERLAY, 0, 15, 0x80,
	0xffffffff,
};
static const uint32_t memories[] = {
	V4L2_MEMORY_MMAP, V4L2_MEMORY_MMAP, V4L2_MEMORY_USERPTR,
	V4L2_MEMORY_USERPTR, V4L2_MEMORY_DMABUF, V4L2_MEMORY_DMABUF,
	V4L2_MEMORY_OVERLAY, 0, 5, 0xffffffff,
};
static const uint32_t counts[] = {
	0, 1, 2, 2, 3, 4, 4, 8, 16, 32, 33, 64, 1000, 0x7fffffff, 0xffffffff,
};
static const uint32_t indexes[] = {
	0, 0, 0, 1, 1, 2, 3, 4, 7, 8, 31, 32, 63, 64, 1000, 0xffffffff,
};
static const uint32_t plane_counts[] = { 0, 1, 1, 1, 2, 3, 8, 9, 255, 0xffffffff };
static const uint32_t lengths[] = {
	0, 1, 100, 4095, 4096, 4097, 153600, 460800, 614400, 1 << 20,
	6 << 20, 0x7fffffff, 0xffffffff,
};
static const uint32_t pixfmts[] = {
	V4L2_PIX_FMT_YUYV, V4L2_PIX_FMT_RGB24, V4L2_PIX_FMT_NV12,
	V4L2_PIX_FMT_NV12M, V4L2_PIX_FMT_YUV420M, V4L2_PIX_FMT_GREY,
	V4L2_PIX_FMT_YUV420, V4L2_PIX_FMT_H264, 0, 0xffffffff,
};
static const uint32_t dims[] = { 0, 1, 2, 320, 640, 641, 1280, 1920, 4096, 65535, 0xffffffff };
static const uint32_t ctrl_ids[] = {
	V4L2_CID_BRIGHTNESS, V4L2_CID_CONTRAST, V4L2_CID_HFLIP,
	V4L2_CID_POWER_LINE_FREQUENCY, V4L2_CID_USER_CLASS,
	0x00981980 /* the test device's U8 array */,
	0x00981981 /* its checksum (read-only, volatile) */,
	V4L2_CID_PRIVATE_BASE, 0, 0xffffffff,
};

/* A user pointer: mostly good memory, sometimes anything but. */
static uint64_t gen_ptr(struct rng *r, const struct arenas *a, size_t len)
{
	size_t room = a->good_size > len ? a->good_size - len : 0;

	switch (below(r, 12)) {
	case 0: return 0;
	case 1: return (uintptr_t)a->ro;
	case 2: return (uintptr_t)a->none;
	case 3: return (uintptr_t)a->edge + 4096 - below(r, 64);	/* runs into `none` */
	case 4: return 0xffffffff81000000ull;			/* kernel text */
	case 5: return (uintptr_t)a->shmem + (below(r, 2) ? 0 : below(r, a->shmem_size));	/* may run into its guard */
	case 6: return (uintptr_t)a->good + below(r, room + 1);	/* unaligned */
	case 7: return rnd(r);
	default: return (uintptr_t)a->good + (below(r, room + 1) & ~4095ull);
	}
}

/* An fd for a DMABUF buffer: a real dma-buf, or a wrong fd. */
static int gen_fd(struct rng *r, const struct learned *l)
{
	switch (below(r, 6)) {
	case 0: return -1;
	case 1: return PICK(r, l->other_fds);
	case 2: return (int)below(r, 64);			/* anything open, the video fds too */
	case 3: return 1023;					/* nothing */
	default: return PICK(r, l->dmabufs);
	}
}

static uint32_t gen_offset(struct rng *r, const struct learned *l)
{
	static const uint32_t odd[] = { 0, 4096, 1, 0x40000000, 0x80000000, 0xfffff000 };

	return chance(r, 700) ? PICK(r, l->offsets) : PICK(r, odd);
}

static void gen_planes(struct rng *r, struct v4l2_plane *p, unsigned int n, uint32_t mem,
		       const struct arenas *a, const struct learned *l)
{
	for (unsigned int i = 0; i < n; i++) {
		p[i].length = PICK(r, lengths);
		p[i].bytesused = chance(r, 500) ? p[i].length : PICK(r, lengths);
		p[i].data_offset = chance(r, 800) ? 0 : PICK(r, lengths);
		if (mem == V4L2_MEMORY_USERPTR)
			p[i].m.userptr = gen_ptr(r, a, p[i].length);
		else if (mem == V4L2_MEMORY_DMABUF)
			p[i].m.fd = gen_fd(r, l);
		else
			p[i].m.mem_offset = gen_offset(r, l);
	}
}

static void gen_buffer(struct rng *r, struct v4l2_buffer *b, const struct arenas *a, struct learned *l)
{
	b->index = PICK(r, indexes);
	b->type = PICK(r, buf_types);
	b->memory = PICK(r, memories);
	b->field = chance(r, 900) ? V4L2_FIELD_NONE : (uint32_t)rnd(r);
	b->flags = chance(r, 800) ? 0 : (uint32_t)rnd(r);
	b->bytesused = PICK(r, lengths);
	b->length = PICK(r, lengths);
	b->request_fd = chance(r, 950) ? 0 : gen_fd(r, l);
	if (b->type == V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE || b->type == V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE) {
		/* The planes array lives right after the buffer in `good`'s scratch. */
		struct v4l2_plane *planes = (struct v4l2_plane *)(b + 1);

		b->length = PICK(r, plane_counts);
		memset(planes, 0, 8 * sizeof(*planes));
		gen_planes(r, planes, b->length < 8 ? b->length : 8, b->memory, a, l);
		switch (below(r, 10)) {
		case 0: b->m.planes = (void *)(uintptr_t)gen_ptr(r, a, 64); break;
		case 1: b->m.planes = (void *)(a->edge + 4096 - sizeof(*planes)); break;
		default: b->m.planes = planes;
		}
	} else if (b->memory == V4L2_MEMORY_USERPTR) {
		b->m.userptr = gen_ptr(r, a, b->length);
	} else if (b->memory == V4L2_MEMORY_DMABUF) {
		b->m.fd = gen_fd(r, l);
	} else {
		b->m.offset = gen_offset(r, l);
	}
}

static void gen_format(struct rng *r, struct v4l2_format *f)
{
	f->type = PICK(r, buf_types);
	if (chance(r, 200))
		return;		/* only the type: what G_FMT wants */
	struct v4l2_pix_format_mplane *mp = &f->fmt.pix_mp;

	mp->width = PICK(r, dims);
	mp->height = PICK(r, dims);
	mp->pixelformat = PICK(r, pixfmts);
	mp->field = chance(r, 900) ? V4L2_FIELD_NONE : (uint32_t)rnd(r);
	mp->colorspace = (uint32_t)below(r, 13);
	mp->num_planes = (uint8_t)PICK(r, plane_counts);
	for (int i = 0; i < VIDEO_MAX_PLANES; i++) {
		mp->plane_fmt[i].sizeimage = PICK(r, lengths);
		mp->plane_fmt[i].bytesperline = PICK(r, dims);
	}
	if (f->type == V4L2_BUF_TYPE_VIDEO_CAPTURE || f->type == V4L2_BUF_TYPE_VIDEO_OUTPUT) {
		f->fmt.pix.bytesperline = PICK(r, dims);
		f->fmt.pix.sizeimage = PICK(r, lengths);
	}
}

static void gen_ext_ctrls(struct rng *r, struct v4l2_ext_controls *c, const struct arenas *a)
{
	static const uint32_t which[] = {
		V4L2_CTRL_WHICH_CUR_VAL, V4L2_CTRL_WHICH_CUR_VAL, V4L2_CTRL_WHICH_DEF_VAL,
		V4L2_CTRL_WHICH_REQUEST_VAL, V4L2_CTRL_WHICH_MIN_VAL, V4L2_CTRL_CLASS_USER,
		V4L2_CTRL_CLASS_CAMERA, 0xffffffff,
	};
	static const uint32_t ncontrols[] = { 0, 1, 1, 2, 3, 8, 64, 1024, 1025, 0xffffffff };
	/* The array lives right after the struct in `good`'s scratch. */
	struct v4l2_ext_control *ctrl = (struct v4l2_ext_control *)(c + 1);
	uint32_t n = PICK(r, ncontrols);

	c->which = PICK(r, which);
	c->count = n;
	for (uint32_t i = 0; i < n && i < 64; i++) {
		ctrl[i].id = PICK(r, ctrl_ids) | (chance(r, 100) ? V4L2_CTRL_FLAG_NEXT_CTRL : 0);
		ctrl[i].size = chance(r, 600) ? 0 : PICK(r, lengths) % 8200;
		if (ctrl[i].size || chance(r, 200))
			ctrl[i].ptr = (void *)(uintptr_t)gen_ptr(r, a, ctrl[i].size);
		else
			ctrl[i].value64 = (int64_t)PICK(r, dims) - 1;
	}
	switch (below(r, 10)) {
	case 0: c->controls = (void *)(uintptr_t)gen_ptr(r, a, n * sizeof(*ctrl)); break;
	case 1: c->controls = (void *)(a->edge + 4096 - sizeof(*ctrl)); break;
	default: c->controls = n <= 64 ? ctrl : (void *)a->good;
	}
}

void *gen_ioctl_arg(struct rng *r, unsigned long code, void *arg, size_t size,
		    const struct arenas *a, struct learned *l)
{
	/* Noise first, so every field the cases below leave alone is random
	 * or zero. */
	if (chance(r, 100))
		for (size_t i = 0; i < size; i++)
			((uint8_t *)arg)[i] = (uint8_t)rnd(r);
	else
		memset(arg, 0, size);

	switch (code) {
	case VIDIOC_REQBUFS: {
		struct v4l2_requestbuffers *q = arg;

		q->count = PICK(r, counts);
		q->type = PICK(r, buf_types);
		q->memory = PICK(r, memories);
		q->flags = chance(r, 800) ? 0 : (uint8_t)rnd(r);
		break;
	}
	case VIDIOC_CREATE_BUFS: {
		struct v4l2_create_buffers *c = arg;

		c->count = PICK(r, counts);
		c->memory = PICK(r, memories);
		gen_format(r, &c->format);
		c->flags = chance(r, 800) ? 0 : (uint32_t)rnd(r);
		break;
	}
	case VIDIOC_QUERYBUF: case VIDIOC_QBUF: case VIDIOC_DQBUF: case VIDIOC_PREPARE_BUF:
		gen_buffer(r, arg, a, l);
		break;
	case VIDIOC_EXPBUF: {
		struct v4l2_exportbuffer *e = arg;

		e->type = PICK(r, buf_types);
		e->index = PICK(r, indexes);
		e->plane = (uint32_t)below(r, 10) == 9 ? 0xffffffff : (uint32_t)below(r, 4);
		e->flags = chance(r, 700) ? O_CLOEXEC | (chance(r, 500) ? O_RDWR : 0) : (uint32_t)rnd(r);
		break;
	}
	case VIDIOC_REMOVE_BUFS: {
		struct v4l2_remove_buffers *rb = arg;

		rb->index = PICK(r, indexes);
		rb->count = PICK(r, counts);
		rb->type = PICK(r, buf_types);
		break;
	}
	case VIDIOC_STREAMON: case VIDIOC_STREAMOFF:
		*(uint32_t *)arg = PICK(r, buf_types);
		break;
	case VIDIOC_G_FMT: case VIDIOC_S_FMT: case VIDIOC_TRY_FMT:
		gen_format(r, arg);
		break;
	case VIDIOC_G_EXT_CTRLS: case VIDIOC_S_EXT_CTRLS: case VIDIOC_TRY_EXT_CTRLS:
		gen_ext_ctrls(r, arg, a);
		break;
	case VIDIOC_G_CTRL: case VIDIOC_S_CTRL: {
		struct v4l2_control *c = arg;

		c->id = PICK(r, ctrl_ids);
		c->value = (int32_t)PICK(r, dims);
		break;
	}
	case VIDIOC_QUERYCTRL: case VIDIOC_QUERY_EXT_CTRL: case VIDIOC_QUERYMENU:
		/* id is the first field of all three. */
		*(uint32_t *)arg = PICK(r, ctrl_ids) |
			(chance(r, 300) ? V4L2_CTRL_FLAG_NEXT_CTRL : 0) |
			(chance(r, 200) ? V4L2_CTRL_FLAG_NEXT_COMPOUND : 0);
		if (code == VIDIOC_QUERYMENU)
			((struct v4l2_querymenu *)arg)->index = PICK(r, indexes);
		break;
	case VIDIOC_SUBSCRIBE_EVENT: case VIDIOC_UNSUBSCRIBE_EVENT: {
		struct v4l2_event_subscription *s = arg;
		static const uint32_t types[] = {
			V4L2_EVENT_ALL, V4L2_EVENT_VSYNC, V4L2_EVENT_EOS, V4L2_EVENT_CTRL,
			V4L2_EVENT_CTRL, V4L2_EVENT_FRAME_SYNC, V4L2_EVENT_SOURCE_CHANGE,
			V4L2_EVENT_MOTION_DET, V4L2_EVENT_PRIVATE_START, 0xffffffff,
		};

		s->type = PICK(r, types);
		s->id = chance(r, 500) ? V4L2_CID_BRIGHTNESS : PICK(r, ctrl_ids);
		s->flags = chance(r, 800) ? (uint32_t)below(r, 4) : (uint32_t)rnd(r);
		break;
	}
	case VIDIOC_G_SELECTION: case VIDIOC_S_SELECTION: {
		struct v4l2_selection *s = arg;
		static const uint32_t targets[] = {
			V4L2_SEL_TGT_CROP, V4L2_SEL_TGT_CROP_DEFAULT, V4L2_SEL_TGT_CROP_BOUNDS,
			V4L2_SEL_TGT_COMPOSE, V4L2_SEL_TGT_COMPOSE_PADDED, 0xffffffff,
		};

		s->type = PICK(r, buf_types);
		s->target = PICK(r, targets);
		s->flags = (uint32_t)below(r, 8);
		s->r.left = (int32_t)PICK(r, dims);
		s->r.top = (int32_t)PICK(r, dims);
		s->r.width = PICK(r, dims);
		s->r.height = PICK(r, dims);
		break;
	}
	case VIDIOC_ENUM_FMT: case VIDIOC_ENUM_FRAMESIZES: case VIDIOC_ENUM_FRAMEINTERVALS:
	case VIDIOC_ENUMINPUT: case VIDIOC_ENUMOUTPUT: case VIDIOC_ENUMSTD:
	case VIDIOC_ENUMAUDIO: case VIDIOC_ENUMAUDOUT:
		/* index first; a type, a pixel format or a size after it. */
		((uint32_t *)arg)[0] = PICK(r, indexes);
		((uint32_t *)arg)[1] = code == VIDIOC_ENUM_FMT ? PICK(r, buf_types) : PICK(r, pixfmts);
		if (code == VIDIOC_ENUM_FRAMEINTERVALS) {
			((uint32_t *)arg)[2] = PICK(r, dims);
			((uint32_t *)arg)[3] = PICK(r, dims);
		}
		break;
	case VIDIOC_G_PARM: case VIDIOC_S_PARM: case VIDIOC_G_FBUF: case VIDIOC_CROPCAP:
	case VIDIOC_G_CROP: case VIDIOC_S_CROP:
		*(uint32_t *)arg = PICK(r, buf_types);
		break;
	case VIDIOC_DECODER_CMD: case VIDIOC_TRY_DECODER_CMD:
	case VIDIOC_ENCODER_CMD: case VIDIOC_TRY_ENCODER_CMD:
		((uint32_t *)arg)[0] = (uint32_t)below(r, 5) == 4 ? 0xffffffff : (uint32_t)below(r, 4);
		((uint32_t *)arg)[1] = chance(r, 800) ? 0 : (uint32_t)rnd(r);
		break;
	case VIDIOC_S_INPUT: case VIDIOC_S_OUTPUT: case VIDIOC_S_PRIORITY: case VIDIOC_OVERLAY:
		*(uint32_t *)arg = PICK(r, indexes);
		break;
	case VIDIOC_G_EDID: case VIDIOC_S_EDID: {
		struct v4l2_edid *e = arg;

		e->blocks = PICK(r, counts);
		e->start_block = PICK(r, indexes);
		e->edid = (void *)(uintptr_t)gen_ptr(r, a, 128);
		break;
	}
	default:
		break;
	}

	/* Sometimes the argument itself is bad. */
	switch (below(r, 40)) {
	case 0: return NULL;
	case 1: return a->none;
	case 2: return a->ro;				/* fine to read, not to write back */
	case 3: return a->edge + 4096 - (size > 8 ? size / 2 : 1);	/* half mapped */
	case 4: return (void *)0xffffffff81000000ull;
	default: return arg;
	}
}

void learn_from(unsigned long code, const void *arg, struct learned *l)
{
	if (code == VIDIOC_QUERYBUF) {
		const struct v4l2_buffer *b = arg;
		static unsigned int next;

		if (b->memory != V4L2_MEMORY_MMAP)
			return;
		if (b->type == V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE ||
		    b->type == V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE) {
			for (unsigned int i = 0; i < b->length && i < VIDEO_MAX_PLANES; i++)
				l->offsets[__atomic_fetch_add(&next, 1, __ATOMIC_RELAXED) % 64] =
					b->m.planes[i].m.mem_offset;
		} else {
			l->offsets[__atomic_fetch_add(&next, 1, __ATOMIC_RELAXED) % 64] = b->m.offset;
		}
	} else if (code == VIDIOC_EXPBUF) {
		const struct v4l2_exportbuffer *e = arg;
		static unsigned int next;

		__atomic_store_n(&l->dmabufs[__atomic_fetch_add(&next, 1, __ATOMIC_RELAXED) % 8], e->fd,
				 __ATOMIC_RELAXED);
	}
}

/* Every V4L2 ioctl there is, each with a weight: the buffer and stream
 * ioctls a driver most easily gets wrong come up most. */
static const struct {
	unsigned long code;
	const char *name;
	unsigned int weight;
} ioctls[] = {
#define IO(name, w) { name, #name, w }
	IO(VIDIOC_QUERYCAP, 1), IO(VIDIOC_ENUM_FMT, 2), IO(VIDIOC_G_FMT, 3),
	IO(VIDIOC_S_FMT, 6), IO(VIDIOC_TRY_FMT, 3), IO(VIDIOC_REQBUFS, 14),
	IO(VIDIOC_QUERYBUF, 10), IO(VIDIOC_G_FBUF, 1), IO(VIDIOC_S_FBUF, 1),
	IO(VIDIOC_OVERLAY, 1), IO(VIDIOC_QBUF, 18), IO(VIDIOC_EXPBUF, 6),
	IO(VIDIOC_DQBUF, 14), IO(VIDIOC_STREAMON, 10), IO(VIDIOC_STREAMOFF, 8),
	IO(VIDIOC_G_PARM, 1), IO(VIDIOC_S_PARM, 1), IO(VIDIOC_G_STD, 1),
	IO(VIDIOC_S_STD, 1), IO(VIDIOC_ENUMSTD, 1), IO(VIDIOC_ENUMINPUT, 1),
	IO(VIDIOC_G_CTRL, 2), IO(VIDIOC_S_CTRL, 2), IO(VIDIOC_G_TUNER, 1),
	IO(VIDIOC_S_TUNER, 1), IO(VIDIOC_G_AUDIO, 1), IO(VIDIOC_S_AUDIO, 1),
	IO(VIDIOC_QUERYCTRL, 2), IO(VIDIOC_QUERYMENU, 2), IO(VIDIOC_G_INPUT, 1),
	IO(VIDIOC_S_INPUT, 1), IO(VIDIOC_G_EDID, 1), IO(VIDIOC_S_EDID, 1),
	IO(VIDIOC_G_OUTPUT, 1), IO(VIDIOC_S_OUTPUT, 1), IO(VIDIOC_ENUMOUTPUT, 1),
	IO(VIDIOC_G_AUDOUT, 1), IO(VIDIOC_S_AUDOUT, 1), IO(VIDIOC_G_MODULATOR, 1),
	IO(VIDIOC_S_MODULATOR, 1), IO(VIDIOC_G_FREQUENCY, 1), IO(VIDIOC_S_FREQUENCY, 1),
	IO(VIDIOC_CROPCAP, 1), IO(VIDIOC_G_CROP, 1), IO(VIDIOC_S_CROP, 1),
	IO(VIDIOC_G_JPEGCOMP, 1), IO(VIDIOC_S_JPEGCOMP, 1), IO(VIDIOC_QUERYSTD, 1),
	IO(VIDIOC_ENUMAUDIO, 1), IO(VIDIOC_ENUMAUDOUT, 1), IO(VIDIOC_G_PRIORITY, 1),
	IO(VIDIOC_S_PRIORITY, 1), IO(VIDIOC_G_SLICED_VBI_CAP, 1), IO(VIDIOC_LOG_STATUS, 1),
	IO(VIDIOC_G_EXT_CTRLS, 5), IO(VIDIOC_S_EXT_CTRLS, 5), IO(VIDIOC_TRY_EXT_CTRLS, 4),
	IO(VIDIOC_ENUM_FRAMESIZES, 1), IO(VIDIOC_ENUM_FRAMEINTERVALS, 1),
	IO(VIDIOC_G_ENC_INDEX, 1), IO(VIDIOC_ENCODER_CMD, 1), IO(VIDIOC_TRY_ENCODER_CMD, 1),
	IO(VIDIOC_DBG_S_REGISTER, 1), IO(VIDIOC_DBG_G_REGISTER, 1),
	IO(VIDIOC_S_HW_FREQ_SEEK, 1), IO(VIDIOC_S_DV_TIMINGS, 1), IO(VIDIOC_G_DV_TIMINGS, 1),
	IO(VIDIOC_DQEVENT, 4), IO(VIDIOC_SUBSCRIBE_EVENT, 4), IO(VIDIOC_UNSUBSCRIBE_EVENT, 3),
	IO(VIDIOC_CREATE_BUFS, 8), IO(VIDIOC_PREPARE_BUF, 5), IO(VIDIOC_G_SELECTION, 2),
	IO(VIDIOC_S_SELECTION, 2), IO(VIDIOC_DECODER_CMD, 3), IO(VIDIOC_TRY_DECODER_CMD, 2),
	IO(VIDIOC_ENUM_DV_TIMINGS, 1), IO(VIDIOC_QUERY_DV_TIMINGS, 1), IO(VIDIOC_DV_TIMINGS_CAP, 1),
	IO(VIDIOC_ENUM_FREQ_BANDS, 1), IO(VIDIOC_DBG_G_CHIP_INFO, 1), IO(VIDIOC_QUERY_EXT_CTRL, 3),
	IO(VIDIOC_REMOVE_BUFS, 4),
#undef IO
};

unsigned long gen_ioctl_code(struct rng *r)
{
	unsigned int n = sizeof(ioctls) / sizeof(ioctls[0]), total = 0;

	for (unsigned int i = 0; i < n; i++)
		total += ioctls[i].weight;
	switch (below(r, 50)) {
	case 0:	/* a V4L2 number with the wrong size or direction */
		return _IOC(below(r, 4), 'V', below(r, 110), below(r, 512));
	case 1:	/* another driver's ioctl, or noise */
		return below(r, 2) ? _IOWR('d', below(r, 64), uint64_t) : (unsigned long)(uint32_t)rnd(r);
	default:
		break;
	}
	unsigned int pick = (unsigned int)below(r, total);

	for (unsigned int i = 0; i < n; i++) {
		if (pick < ioctls[i].weight)
			return ioctls[i].code;
		pick -= ioctls[i].weight;
	}
	return VIDIOC_QUERYCAP;
}

const char *ioctl_name(unsigned long code, char *buf, size_t len)
{
	for (unsigned int i = 0; i < sizeof(ioctls) / sizeof(ioctls[0]); i++)
		if (ioctls[i].code == code)
			return ioctls[i].name;
	snprintf(buf, len, "ioctl %#lx", code);
	return buf;
}
