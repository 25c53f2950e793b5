/*
 * Meta sign-in for channels ("Continue with Facebook", contract section 9):
 * POST /orgs/c/connections/meta turns the code of WhatsApp Embedded Signup or Facebook
 * Login into the org's WhatsApp, Messenger and Instagram connections (meta_signin.c).
 */
#ifndef SB_META_SIGNIN_H
#define SB_META_SIGNIN_H

#include <jansson.h>
#include "job.h"

/** GET /orgs/c/connections/meta: the app id and configuration id the console's sign-in
 *  opens with (200), or 501 meta_signin_not_configured. Answers 'job' (a management job). */
void sb_meta_signin_info(sb_job_t *job);

/**
 * POST /orgs/c/connections/meta with 'body' ({code, redirect_uri?, pin?}, borrowed; NULL
 * when the request had none) for org 'org': every Graph step, the connections stored
 * through sb_mgmt_connection_save, each WhatsApp number's webhook override, then 201 with
 * them, each saying where its webhooks go. Answers 'job' (a management job).
 */
void sb_meta_signin_start(sb_job_t *job, const char *org, json_t *body);

#endif
