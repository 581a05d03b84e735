// SPDX-License-Identifier: GPL-2.0
//
// frame-md5 FILE FRAME_SIZE: one line "INDEX MD5" per frame of FILE ("-":
// standard input), as tools/virtio-media-vfu's --frame-log writes them for
// the device; a partial frame at the end is an error.
//
// One process for all frames: under TCG with a sanitizer kernel, a
// dd | md5sum pair per frame cost about 110 s for 300 frames. The MD5 is
// OpenSSL's (libcrypto, which the kernel build already needs).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned int digest_len;
	unsigned long index = 0;
	char *end;

	if (argc != 3) {
		fprintf(stderr, "usage: %s FILE FRAME_SIZE\n", argv[0]);
		return 2;
	}
	errno = 0;
	unsigned long size = strtoul(argv[2], &end, 10);
	if (errno || *end || size == 0) {
		fprintf(stderr, "frame-md5: bad frame size '%s'\n", argv[2]);
		return 2;
	}
	FILE *in = strcmp(argv[1], "-") ? fopen(argv[1], "rb") : stdin;

	// A pipe of 16 pages woke both sides up ten times a frame; 1 MiB is
	// the default ceiling for unprivileged programs. Best effort.
	if (in == stdin)
		fcntl(STDIN_FILENO, F_SETPIPE_SZ, 1 << 20);
	unsigned char *frame = malloc(size);
	if (!in || !frame) {
		fprintf(stderr, "frame-md5: %s: %s\n", argv[1], strerror(errno));
		return 2;
	}
	size_t got;

	while ((got = fread(frame, 1, size, in)) == size) {
		if (!EVP_Digest(frame, size, digest, &digest_len, EVP_md5(), NULL)) {
			fprintf(stderr, "frame-md5: MD5 failed\n");
			return 2;
		}
		printf("%lu ", index++);
		for (unsigned int i = 0; i < digest_len; i++)
			printf("%02x", digest[i]);
		printf("\n");
	}
	if (ferror(in)) {
		fprintf(stderr, "frame-md5: reading %s failed\n", argv[1]);
		return 2;
	}
	if (got) {
		fprintf(stderr, "frame-md5: %zu bytes after frame %lu, not a whole frame\n", got, index);
		return 1;
	}
	return 0;
}
