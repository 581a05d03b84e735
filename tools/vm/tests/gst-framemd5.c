// SPDX-License-Identifier: GPL-2.0
/*
 * gst-framemd5 [--seek SECONDS] [--timeout SECONDS] PIPELINE
 *
 * Runs the GStreamer pipeline description PIPELINE, ended by an appsink,
 * and prints one line per decoded frame:
 *
 *     INDEX PTS_NS WIDTHxHEIGHT FORMAT MD5
 *
 * where MD5 covers the visible pixels of each plane, row by row, without
 * stride padding: the bytes FFmpeg's framemd5 hashes for the same frame in
 * the same pixel format. checksumsink hashes whole buffers, padding
 * included, so it cannot be compared with a software decode.
 *
 * --seek pauses the pipeline once prerolled, seeks (flushing, accurate) to
 * SECONDS and plays from there: the frames printed are those after the seek.
 * Ends with "EOS" on stdout after the end of stream; exits 1 on an error
 * message or when nothing happened for --timeout seconds (default 60).
 */
#include <gst/app/gstappsink.h>
#include <gst/gst.h>
#include <gst/video/video.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Sets *failed on an error message on the bus. The end of stream is the
 * appsink's (gst_app_sink_is_eos), not the bus's EOS message: that one
 * may come while frames still wait in the appsink.
 */
static void bus_check(GstBus *bus, gboolean *failed)
{
	GstMessage *msg;

	while ((msg = gst_bus_pop_filtered(bus, GST_MESSAGE_ERROR))) {
		GError *err = NULL;
		gchar *debug = NULL;

		gst_message_parse_error(msg, &err, &debug);
		fprintf(stderr, "gst-framemd5: error from %s: %s (%s)\n",
			GST_OBJECT_NAME(GST_MESSAGE_SRC(msg)), err->message, debug ? debug : "");
		g_error_free(err);
		g_free(debug);
		gst_message_unref(msg);
		*failed = TRUE;
	}
}

/* The MD5 of the visible part of every plane, as FFmpeg lays a frame out. */
static gchar *frame_md5(GstVideoFrame *frame)
{
	GChecksum *sum = g_checksum_new(G_CHECKSUM_MD5);
	const GstVideoFormatInfo *finfo = frame->info.finfo;
	guint plane, comp, row;
	gchar *md5;

	for (plane = 0; plane < GST_VIDEO_FRAME_N_PLANES(frame); plane++) {
		const guint8 *data = GST_VIDEO_FRAME_PLANE_DATA(frame, plane);
		gint stride = GST_VIDEO_FRAME_PLANE_STRIDE(frame, plane);
		gsize row_bytes = 0;
		guint rows = 0;

		/* The plane's size comes from the first component stored in it. */
		for (comp = 0; comp < GST_VIDEO_FORMAT_INFO_N_COMPONENTS(finfo); comp++) {
			if (GST_VIDEO_FORMAT_INFO_PLANE(finfo, comp) != plane)
				continue;
			row_bytes = (gsize)GST_VIDEO_FRAME_COMP_WIDTH(frame, comp) *
				    GST_VIDEO_FRAME_COMP_PSTRIDE(frame, comp);
			rows = GST_VIDEO_FRAME_COMP_HEIGHT(frame, comp);
			break;
		}
		for (row = 0; row < rows; row++)
			g_checksum_update(sum, data + (gsize)row * stride, row_bytes);
	}
	md5 = g_strdup(g_checksum_get_string(sum));
	g_checksum_free(sum);
	return md5;
}

/* Prints one frame's line; FALSE if it cannot be read as a video frame. */
static gboolean print_frame(GstSample *sample, guint index)
{
	GstBuffer *buffer = gst_sample_get_buffer(sample);
	GstVideoInfo info;
	GstVideoFrame frame;
	gchar *md5;

	if (!buffer || !gst_video_info_from_caps(&info, gst_sample_get_caps(sample)))
		return FALSE;
	/* Compressed caps parse too, as a format without planes. */
	if (GST_VIDEO_INFO_FORMAT(&info) == GST_VIDEO_FORMAT_ENCODED)
		return FALSE;
	if (!gst_video_frame_map(&frame, &info, buffer, GST_MAP_READ))
		return FALSE;
	md5 = frame_md5(&frame);
	printf("%u %" G_GUINT64_FORMAT " %dx%d %s %s\n", index, GST_BUFFER_PTS(buffer),
	       GST_VIDEO_INFO_WIDTH(&info), GST_VIDEO_INFO_HEIGHT(&info),
	       gst_video_format_to_string(GST_VIDEO_INFO_FORMAT(&info)), md5);
	fflush(stdout);
	g_free(md5);
	gst_video_frame_unmap(&frame);
	return TRUE;
}

/* Waits for the pipeline to reach its pending state (preroll). */
static gboolean wait_state(GstElement *pipeline, gint timeout_s)
{
	GstStateChangeReturn ret;

	ret = gst_element_get_state(pipeline, NULL, NULL, (GstClockTime)timeout_s * GST_SECOND);
	return ret == GST_STATE_CHANGE_SUCCESS || ret == GST_STATE_CHANGE_NO_PREROLL;
}

int main(int argc, char **argv)
{
	gdouble seek_s = -1;
	gint timeout_s = 60;
	gboolean failed = FALSE, eos = FALSE;
	GstElement *pipeline, *sink;
	GError *err = NULL;
	GstBus *bus;
	gchar *description;
	guint index = 0;
	int arg = 1;

	gst_init(&argc, &argv);
	while (arg + 1 < argc && g_str_has_prefix(argv[arg], "--")) {
		if (!strcmp(argv[arg], "--seek"))
			seek_s = g_ascii_strtod(argv[arg + 1], NULL);
		else if (!strcmp(argv[arg], "--timeout"))
			timeout_s = atoi(argv[arg + 1]);
		else
			break;
		arg += 2;
	}
	if (arg != argc - 1 || timeout_s <= 0) {
		fprintf(stderr, "usage: gst-framemd5 [--seek SECONDS] [--timeout SECONDS] PIPELINE\n");
		return 2;
	}
	/* sync=false: as fast as the decoder goes, no clock. */
	description = g_strdup_printf("%s ! appsink name=framemd5_sink sync=false", argv[arg]);
	pipeline = gst_parse_launch(description, &err);
	g_free(description);
	if (!pipeline || err) {
		fprintf(stderr, "gst-framemd5: bad pipeline: %s\n", err ? err->message : "?");
		return 1;
	}
	sink = gst_bin_get_by_name(GST_BIN(pipeline), "framemd5_sink");
	bus = gst_element_get_bus(pipeline);

	if (seek_s >= 0) {
		gst_element_set_state(pipeline, GST_STATE_PAUSED);
		if (!wait_state(pipeline, timeout_s) ||
		    !gst_element_seek_simple(pipeline, GST_FORMAT_TIME,
					     GST_SEEK_FLAG_FLUSH | GST_SEEK_FLAG_ACCURATE,
					     (gint64)(seek_s * GST_SECOND)) ||
		    !wait_state(pipeline, timeout_s)) {
			bus_check(bus, &failed);
			fprintf(stderr, "gst-framemd5: preroll or seek to %.3f s failed\n", seek_s);
			failed = TRUE;
		}
	}
	if (!failed)
		gst_element_set_state(pipeline, GST_STATE_PLAYING);
	while (!failed && !eos) {
		GstSample *sample;

		sample = gst_app_sink_try_pull_sample(GST_APP_SINK(sink),
						      (GstClockTime)timeout_s * GST_SECOND);
		if (sample) {
			if (!print_frame(sample, index++)) {
				fprintf(stderr, "gst-framemd5: frame %u is not a video frame\n", index - 1);
				failed = TRUE;
			}
			gst_sample_unref(sample);
		} else if (gst_app_sink_is_eos(GST_APP_SINK(sink))) {
			eos = TRUE;
		} else {
			bus_check(bus, &failed);
			if (!failed)
				fprintf(stderr, "gst-framemd5: no frame for %d s\n", timeout_s);
			failed = TRUE;
		}
		bus_check(bus, &failed);
	}
	if (eos && !failed)
		printf("EOS\n");
	gst_element_set_state(pipeline, GST_STATE_NULL);
	gst_object_unref(bus);
	gst_object_unref(sink);
	gst_object_unref(pipeline);
	return failed ? 1 : 0;
}
