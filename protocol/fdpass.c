/* fdpass.c — placeholder */
typedef int mseg_proto_placeholder_fdpass;
