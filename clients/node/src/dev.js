/**
 * The development setup: what a server started without `--config` has (docs/CONFIGURATION.md,
 * "The development setup").
 */
export const devSetup = Object.freeze({
  appId: '5b0d0000-0000-4000-8000-000000000a99',
  tenantId: '5b0d0000-0000-4000-8000-0000000000e1',
  clientSecret: 'switchboard-dev-secret',
  parties: Object.freeze({
    /** Answers after 1 s. */
    alice: '5b0d0000-0000-4000-8000-00000000a11c',
    /** Answers after 3 s. */
    bob: '5b0d0000-0000-4000-8000-000000000b0b',
    /** Declines after 2 s (603/8538). */
    carol: '5b0d0000-0000-4000-8000-00000000ca01',
    /** Busy (486/8539). */
    dave: '5b0d0000-0000-4000-8000-00000000da1e',
    /** Never answers (408/10057 after the ringing timeout). */
    erin: '5b0d0000-0000-4000-8000-00000000e1e0',
    /** Unreachable (480/10076). */
    frank: '5b0d0000-0000-4000-8000-00000000f00d',
    /** A phone that answers after 1 s. */
    frontDesk: '+15550100',
    /** A phone that never answers. */
    unansweredPhone: '+15550199',
  }),
  meeting: Object.freeze({ joinMeetingId: '1234567890', passcode: 'switchboard' }),
});
