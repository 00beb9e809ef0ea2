// Types of switchboard-testkit (hand-written: the package is plain JavaScript, used as is).
import type { Agent } from 'node:https';

/** How `Switchboard.start()` starts a server. */
export interface StartOptions {
  /** The switchboard binary. Default: `SWITCHBOARD_BIN`, else `switchboard` on PATH. */
  bin?: string;
  /** A configuration file (`--config`). Default: the development setup. */
  config?: string;
  /** Pass the server's standard error (its warnings) to this process's. Default false. */
  showLogs?: boolean;
  /** How long to wait for the server, in ms. Default 30000. */
  timeoutMs?: number;
}

/** A Graph answer. `body` is parsed JSON, text for another content type, `null` when empty. */
export interface GraphResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: any;
}

/** A `resultInfo`: why a call or an operation ended. */
export interface ResultInfo {
  code: number;
  subcode: number;
  message: string;
}

/** A live call as `GET /_switchboard/v1/calls` lists it. */
export interface LiveCall {
  id: string;
  appId: string;
  tenantId: string;
  state: string;
  direction: 'incoming' | 'outgoing';
  createdAt: string;
  callbackUri: string;
  myParticipantId: string;
  conversationId: string;
}

/** One attempt to deliver a notification. */
export interface DeliveryAttempt {
  at: string;
  /** The receiver's HTTP status, or null when it did not answer. */
  status: number | null;
  /** Why the receiver did not answer, or what an injected fault did (`injected fault: ...`), or null. */
  error: string | null;
  latencyMs: number;
}

/** One notification of a call in Switchboard's deliveries log. */
export interface Delivery {
  sequence: number;
  changeType: 'created' | 'updated' | 'deleted';
  resourceUrl: string;
  callbackUri: string;
  createdAt: string;
  status: 'pending' | 'delivered' | 'dead';
  attemptCount: number;
  nextAttemptAt: string | null;
  /** The `commsNotifications` envelope as POSTed. */
  body: { '@odata.type': string; value: any[] };
  attempts: DeliveryAttempt[];
}

/** The answer to a redelivery. */
export interface Redelivery {
  callId: string;
  sequence: number;
  status: 'pending' | 'delivered' | 'dead';
  attempt: DeliveryAttempt;
}

/** A simulated party as `GET /_switchboard/v1/parties/{id}` shows it. */
export interface PartyView {
  id: string;
  kind?: 'user' | 'phone';
  displayName?: string;
  behavior?: string;
  calls: { callId: string; state: string; resultInfo: ResultInfo | null; tonesReceived: string }[];
  /** The last 50 commands the party received, oldest first (`dial`, `play`, `sendDtmf`, `hangUp`, ...). */
  heard?: { at: string; command: string; callId?: string; [key: string]: any }[];
}

/** A configured meeting as `GET /_switchboard/v1/meetings/{id}` shows it. */
export interface MeetingView {
  joinMeetingId: string;
  threadId: string;
  organizer: string | null;
  joinWebUrl: string;
  active: boolean;
  participants: { id: string; kind: 'user' | 'phone' | 'bot'; callId?: string; inLobby: boolean }[];
}

/**
 * What a Graph request gets: `429` with `Retry-After`, `503`, `504`, a late answer, or `503`
 * after the request took effect.
 */
export type ApiFaultKind = 'throttle' | 'unavailable' | 'gateway_timeout' | 'latency' | 'commit_then_fail';

/** What a notification gets: its first attempts fail unsent, it is never sent (then dead), or its first attempt waits. */
export type NotificationFaultKind = 'fail_first' | 'drop_after' | 'delay';

/**
 * A rule for Graph requests (`[[faults.api]]`), with the server's keys. Only `fault` is needed; a
 * key left out (or null) takes the server's default.
 */
export interface ApiFault {
  fault: ApiFaultKind;
  /** The app whose requests it applies to; every app if null. */
  app_id?: string | null;
  /**
   * `calls` (create), `call` (get, delete), `operation`, `participants`, ... or an action's name
   * (`answer`, `playPrompt`, ...), in any case; every route if null.
   */
  route?: string | null;
  /** The chance, 0 to 1, that a matching request gets it. Default 1. */
  probability?: number;
  /** At most this many requests get it; no limit if null. */
  times?: number | null;
  /** `throttle`'s `Retry-After`. Default 1. */
  retry_after_secs?: number | null;
  /** `latency`'s delay, at most 60000. Default 500. */
  latency_ms?: number | null;
}

/**
 * A rule for notifications (`[[faults.notifications]]`), with the server's keys. Only `fault` is
 * needed; a key left out (or null) takes the server's default. A notification draws once, at its
 * first attempt.
 */
export interface NotificationFault {
  fault: NotificationFaultKind;
  /** The app whose notifications it applies to; every app if null. */
  app_id?: string | null;
  /** The call whose notifications it applies to; every call if null. */
  call_id?: string | null;
  /** The chance, 0 to 1, that a matching notification gets it. Default 1. */
  probability?: number;
  /** For `fail_first` and `drop_after`. Default 1. */
  attempts?: number | null;
  /** For `delay`, in ms of real time, at most 60000. Default 500. */
  delay_ms?: number | null;
}

/** The fault rules in force, every key filled in (null for a default), with the seed their random choices are drawn from. */
export interface FaultRules {
  seed: number;
  api: Required<ApiFault>[];
  notifications: Required<NotificationFault>[];
}

/** Whether a delivery attempt was changed by an injected fault: its `error` starts with `injected fault:`. */
export function isInjected(attempt: Pick<DeliveryAttempt, 'error'>): boolean;

/** An error answer of Switchboard's control API or token endpoint. */
export class SwitchboardError extends Error {
  /** The HTTP status. */
  status: number;
  /** The error code of the body (`notInCall`, `8522`, ...), if any. */
  code: string | undefined;
  /** The parsed answer body. */
  body: unknown;
}

/**
 * A running Switchboard server and the helpers a test uses to steer it: Graph requests with an
 * app token, simulated parties, the virtual clock, faults, deliveries and meetings.
 */
export class Switchboard {
  /**
   * Starts a server for this process with `switchboard exec` (a free port, memory store,
   * virtual clock, https public URL) and resolves once it serves.
   */
  static start(options?: StartOptions): Promise<Switchboard>;
  /**
   * Attaches to the server `switchboard exec` started (its `SWITCHBOARD_*` variables), or to any
   * server named by `SWITCHBOARD_URL`, taking the development app for what is not set.
   */
  static fromEnv(env?: Record<string, string | undefined>): Switchboard;
  /** `fromEnv()` when `SWITCHBOARD_URL` is set, otherwise `start(options)`. */
  static connect(options?: StartOptions): Promise<Switchboard>;

  /** The server over plain HTTP: `http://127.0.0.1:PORT`. */
  readonly url: string;
  /** The same port over TLS, for the SDKs: `https://127.0.0.1:PORT`. */
  readonly httpsUrl: string;
  readonly appId: string;
  readonly tenantId: string;
  readonly clientSecret: string;
  /** The local certificate authority's PEM file, or undefined when the server has none. */
  readonly caFile: string | undefined;
  /** The PEM text of `caFile`. */
  readonly ca: string | undefined;
  /** The control API's token, or undefined when none is configured. */
  readonly adminToken: string | undefined;
  /** An https.Agent that trusts the local authority, for this process's own requests. */
  readonly httpsAgent: Agent | undefined;

  /** Stops the server if `start()` started it; a server this process attached to is left running. */
  stop(): Promise<void>;
  /** A Graph app token for `appId` (client credentials), kept until a minute before it expires. */
  token(): Promise<string>;
  /**
   * A Graph request with the app's token. `path` is under `/v1.0` unless it starts with `/v1.0/`
   * or `/beta/`. Any status is returned, not thrown.
   */
  graph(method: string, path: string, body?: unknown): Promise<GraphResponse>;
  /** Empties the server; meetings as configured. The clock stays where it is. */
  reset(): Promise<void>;
  /**
   * Moves the virtual clock forward and runs what fell due. With `settle` (the default) it
   * resolves once every notification due by then has had its delivery attempt. Resolves to the
   * clock's new time.
   */
  advance(seconds: number, options?: { settle?: boolean }): Promise<Date>;
  /** The call clock's time. */
  clockNow(): Promise<Date>;
  /** The party hangs up every call leg it is in; resolves to the bots' calls that ended. */
  hangUp(party: string): Promise<string[]>;
  /** The party presses keys (`0`-`9`, `*`, `#`, `A`-`D`); resolves to the bots' calls that heard them. */
  press(party: string, keys: string): Promise<string[]>;
  /**
   * The party calls an app (default: this one); its bot gets an incoming call at `callbackUri`
   * (default: the app's `incoming_call_uri`). Resolves to the bot's new call id.
   */
  dial(party: string, options?: { appId?: string; callbackUri?: string }): Promise<string>;
  /** Ends a live call now with this end reason; resolves to the `resultInfo` sent. */
  failCall(callId: string, reason: { code: number; subcode: number }): Promise<ResultInfo>;
  /** Every live call, oldest first, optionally only those in `state` or of `appId`. */
  calls(filter?: { state?: string; appId?: string }): Promise<LiveCall[]>;
  /** Every notification of a call, in order, with its attempts. */
  deliveries(callId: string): Promise<Delivery[]>;
  /** POSTs one notification of a call again, now. */
  redeliver(callId: string, sequence: number): Promise<Redelivery>;
  /**
   * Replaces the fault rules with these (none given: no rules) and starts their random choices
   * again from `seed` (the server picks one when it is not given; a seed must be a safe integer).
   * Resolves to the rules in force.
   */
  setFaults(rules?: { seed?: number; api?: ApiFault[]; notifications?: NotificationFault[] }): Promise<FaultRules>;
  /** The fault rules in force, with their seed. */
  faults(): Promise<FaultRules>;
  /** Removes every fault rule, until `reset()` brings back those of `[faults]`. */
  clearFaults(): Promise<void>;
  /** Who is in a configured meeting now. */
  meeting(joinMeetingId: string): Promise<MeetingView>;
  /** A party, the calls it is or was in, and the commands it received. */
  party(partyId: string): Promise<PartyView>;
  /** A request to the control API (`/_switchboard/v1` + `path`); a status other than 2xx throws. */
  control(method: string, path: string, body?: unknown): Promise<any>;
}

/** A notification as the Receiver recorded it. */
export interface ReceivedNotification {
  /** The call's id, lower case. */
  callId: string;
  /** The call's number for it (`Switchboard-Notification-Sequence`). */
  sequence: number | undefined;
  changeType: 'created' | 'updated' | 'deleted';
  resourceUrl: string;
  /** The call, the operation, or the roster. */
  resourceData: any;
  /** What the notification is about: `call`, `operation` or `participants`. */
  kind: 'call' | 'operation' | 'participants' | string;
  /** The operation's id, lower case, for an operation notification. */
  operationId: string | undefined;
  /** The call's state, for a notification about the call itself. */
  state: string | undefined;
  /** The operation's status (`running`, `completed`, `failed`), for an operation notification. */
  status: string | undefined;
  /** The call's or the operation's `resultInfo`, if any. */
  resultInfo: ResultInfo | undefined;
  /** The tone of a key the caller pressed (`tone1`, `pound`, ...), for a tone notification. */
  tone: string | undefined;
  /** The operation's or the call's `clientContext`, if any. */
  clientContext: string | undefined;
  /** The path it was POSTed to. */
  path: string;
  /** The headers of the POST that carried it (names lower case). */
  headers: Record<string, string | string[] | undefined>;
  /** The `commsNotification` as POSTed. */
  raw: any;
}

/** What `Receiver.waitFor()` waits for; every condition given must hold. */
export interface WaitConditions {
  /** A call notification with this call state (`established`, `terminated`, ...), in any case. */
  state?: string;
  /** A finished (`completed` or `failed`) operation with this id or `clientContext`, in any case. */
  operation?: string;
  changeType?: 'created' | 'updated' | 'deleted';
  /** A tone notification with this tone (`tone1`, `pound`, ...). */
  tone?: string;
  match?: (notification: ReceivedNotification) => boolean;
  /** Only notifications with a greater sequence number. */
  since?: number;
  /** In ms. Default 5000. */
  timeout?: number;
}

export interface ReceiverOptions {
  switchboard: Switchboard;
  /**
   * The bot under test: called with each valid notification, in order, and awaited before the
   * POST is answered. If it throws, the POST is answered 500 and the error kept in `errors`.
   */
  onNotification?: (notification: ReceivedNotification) => unknown;
  /**
   * A bot's own callback URL: each valid POST is passed on to it as it came (headers and body),
   * and answered with the bot's answer. A status other than 2xx is kept in `errors`.
   */
  forwardTo?: string;
  /** The audience notification tokens must have. Default: `switchboard.appId`. */
  appId?: string;
  /** The issuer notification tokens must have. Default: the one the signing metadata names. */
  issuer?: string;
  /** The callback path. Default `/api/calls`. */
  path?: string;
}

/** A POST refused for its token. */
export interface InvalidNotification {
  reason: string;
  authorization: string | undefined;
  body: string;
}

/**
 * A bot's callback endpoint for tests: an HTTP server on 127.0.0.1 that checks each
 * notification's token as a real bot must, records the notifications, hands them to an optional
 * handler, and answers 202. It also serves WAV prompts.
 */
export class Receiver {
  static start(options: ReceiverOptions): Promise<Receiver>;
  /** The callback URL to give Switchboard: `http://127.0.0.1:PORT/api/calls`. */
  readonly url: string;
  /** `http://127.0.0.1:PORT`. */
  readonly origin: string;
  /** Every valid notification received, in order. */
  readonly received: ReceivedNotification[];
  /** POSTs refused for their token (answered 401). */
  readonly invalid: InvalidNotification[];
  /** What `onNotification` threw, and the bot's failed answers to forwarded POSTs. */
  readonly errors: Error[];
  /** The handler; may be set after start. */
  onNotification: ((notification: ReceivedNotification) => unknown) | undefined;
  /** The bot's own endpoint POSTs are passed on to; may be set after start. */
  forwardTo: string | undefined;
  /** Answers the next `count` (default 1) notification POSTs with `status` (default 503) instead of taking them. */
  failNext(count?: number, options?: { status?: number }): void;
  /** The valid notifications received, in order of arrival; only those of `callId` if given. */
  notifications(callId?: string): ReceivedNotification[];
  /** The states the call went through, in order (a state is listed again only after another one). */
  states(callId: string): string[];
  /** The keys the caller pressed, from the call's tone notifications: for example `12#`. */
  tones(callId: string): string;
  /**
   * The first notification of the call (of any call for `null`), received already or later,
   * that matches every condition.
   */
  waitFor(callId: string | null, conditions?: WaitConditions): Promise<ReceivedNotification>;
  /** Serves `seconds` of silence as a WAV file and returns its URL, for `playPrompt`. */
  prompt(name: string, seconds: number): string;
  /** Forgets what was received, refused and thrown, and any `failNext`. Prompts stay. */
  clear(): void;
  /** Throws if a notification had an invalid token, `onNotification` threw, or the bot refused a forwarded POST. */
  assertClean(): void;
  /** Stops the server. */
  close(): Promise<void>;
}

/**
 * Checks the bearer token of a notification POST as a real bot must: RS256, signed by a key of
 * the metadata's `jwks_uri`, the metadata's issuer, the app id as audience, not expired.
 */
export class NotificationTokenValidator {
  constructor(options: { metadataUrl: string; audience: string; issuer?: string; agent?: Agent });
  /** Resolves to the token's claims, or rejects with why it is not valid. */
  validate(authorization: string | undefined): Promise<Record<string, unknown>>;
}

/** A test framework's hooks: node:test's `before`/`after`, or Jest's and Vitest's `beforeAll`/`afterAll`. */
export interface TestHooks {
  before?: (fn: () => unknown) => unknown;
  beforeAll?: (fn: () => unknown) => unknown;
  beforeEach: (fn: () => unknown) => unknown;
  afterEach?: (fn: () => unknown) => unknown;
  after?: (fn: () => unknown) => unknown;
  afterAll?: (fn: () => unknown) => unknown;
}

/** What `useSwitchboard()` gives the tests, once its `before` hook has run. */
export interface SwitchboardKit {
  readonly switchboard: Switchboard;
  readonly receiver: Receiver;
  /**
   * Resolves once both are started. A hook of the test file's own that uses them awaits it
   * first: node:test starts top-level `before` hooks together.
   */
  readonly ready: Promise<void>;
}

/**
 * Registers hooks so that every test of the file gets a running Switchboard and a Receiver:
 * started once (`Switchboard.connect()`), reset and cleared before each test, checked after each
 * test when `afterEach` is given, stopped after the tests.
 */
export function useSwitchboard(
  hooks: TestHooks,
  options?: StartOptions & Pick<ReceiverOptions, 'onNotification' | 'forwardTo'>,
): SwitchboardKit;

/** The development setup: what a server started without `--config` has. */
export const devSetup: {
  readonly appId: string;
  readonly tenantId: string;
  readonly clientSecret: string;
  readonly parties: {
    /** Answers after 1 s. */
    readonly alice: string;
    /** Answers after 3 s. */
    readonly bob: string;
    /** Declines after 2 s (603/8538). */
    readonly carol: string;
    /** Busy (486/8539). */
    readonly dave: string;
    /** Never answers (408/10057 after the ringing timeout). */
    readonly erin: string;
    /** Unreachable (480/10076). */
    readonly frank: string;
    /** A phone that answers after 1 s. */
    readonly frontDesk: string;
    /** A phone that never answers. */
    readonly unansweredPhone: string;
  };
  readonly meeting: { readonly joinMeetingId: string; readonly passcode: string };
};
