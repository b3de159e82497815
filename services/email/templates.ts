/**
 * The email templates: one mustache file per type and part in ./templates (`<type>.html.mustache`,
 * `<type>.txt.mustache`), the subjects and the variables each type accepts here.
 *
 * In the HTML part every `{{value}}` is HTML-escaped (the templates never use `{{{ }}}` or `{{& }}`); the text part is
 * rendered without escaping, since it is not HTML. Values are plain strings that are never themselves parsed as
 * templates. Subjects are fixed texts: no value of a request ever reaches one.
 */
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import Mustache from "mustache";
import { z } from "zod";
import { MAX_ERROR_TEXT_LENGTH, type Violations } from "../shared/errors.js";

export const TEMPLATE_NAMES = ["welcome", "notification", "conversion_complete"] as const;
export type TemplateName = (typeof TEMPLATE_NAMES)[number];

export const DEFAULT_TEMPLATES_DIR = fileURLToPath(new URL("./templates/", import.meta.url));

/**
 * Control characters, CR, LF and NEL included (the same rule as the gateway's, so that what it accepts renders).
 * U+2028/U+2029 pass: they are not line breaks in a header.
 */
export const CONTROL_CHARS = /\p{Cc}/u;
/** The same, but allowing line breaks and tabs, for multi-line body text. */
const CONTROL_CHARS_EXCEPT_LINES = /[\0-\x08\x0B\x0C\x0E-\x1F\x7F-\x84\x86-\x9F]/;

interface VariableSpec {
  required?: boolean;
  /** In characters (code points), as the gateway counts them. */
  maxLength: number;
  /** May contain line breaks (body text only; never a value that reaches a header). */
  multiline?: boolean;
  /** Returns what is wrong with the value, if anything. */
  check?: (value: string) => string | undefined;
}

interface TemplateSpec {
  /**
   * The Subject header, chosen among fixed texts: a subject is what a recipient reads before deciding to open an
   * email, so text of the requester's choosing there would make us a relay for spam (issue #10).
   */
  subject: (variables: Record<string, string>) => string;
  /** Whether the request's user_name must be set. */
  requiresUserName: boolean;
  variables: Record<string, VariableSpec>;
  /** Cross-variable rules. */
  refine?: (variables: Record<string, string>, violations: Violations) => void;
  /** Values derived from the variables, for the templates. */
  derive?: (variables: Record<string, string>) => Record<string, unknown>;
}

const httpUrl = z.url({ protocol: /^https?$/ });
const timestamp = z.iso.datetime({ offset: true });

export const TEMPLATES: Record<TemplateName, TemplateSpec> = {
  welcome: {
    subject: () => "Welcome to mcsv",
    requiresUserName: true,
    variables: {},
  },
  notification: {
    subject: () => "A message from mcsv",
    requiresUserName: false,
    variables: {
      /** The heading of the body (the name predates fixed subjects). */
      subject: { required: true, maxLength: 200 },
      message: { required: true, maxLength: 10_000, multiline: true },
    },
  },
  conversion_complete: {
    subject: (variables) => (variables["state"] === "succeeded" ? "Your PDF is ready" : "Your conversion failed"),
    requiresUserName: false,
    variables: {
      /** Optional: a conversion may have no file name; the body then says "your image". */
      filename: { maxLength: 255 },
      state: {
        required: true,
        maxLength: 20,
        check: (v) => (v === "succeeded" || v === "failed" ? undefined : 'must be "succeeded" or "failed"'),
      },
      pdf_url: {
        maxLength: 4096,
        check: (v) => (httpUrl.safeParse(v).success ? undefined : "must be an http(s) URL"),
      },
      pdf_url_expires_at: {
        maxLength: 40,
        check: (v) => (timestamp.safeParse(v).success ? undefined : "must be an RFC 3339 timestamp"),
      },
      // Generous, since refusing would fail the email for good; the body shows the first 2,000 characters.
      error: { maxLength: 16_384, multiline: true },
      conversion_id: { maxLength: 100 },
    },
    refine: (variables, violations) => {
      if (variables["state"] === "succeeded" && !variables["pdf_url"]) {
        violations.add("variables.pdf_url", "is required when state is succeeded");
      }
    },
    derive: (variables) => ({
      succeeded: variables["state"] === "succeeded",
      failed: variables["state"] === "failed",
      error: shorten(variables["error"] || "unknown error", MAX_ERROR_TEXT_LENGTH),
      file_text: variables["filename"] || "your image",
      expires_at_text: variables["pdf_url_expires_at"] ? formatInstant(variables["pdf_url_expires_at"]) : "",
    }),
  },
};

export const MAX_VARIABLES = 32;
/** A key printed as is in a violation; anything else is quoted and shortened. */
const PLAIN_KEY = /^[\x21-\x7E]{1,64}$/;

/** Adds a violation for every variable that is missing, unknown to the template, or malformed. */
export function checkVariables(name: TemplateName, variables: Record<string, string>, violations: Violations): void {
  const spec = TEMPLATES[name];
  const entries = Object.entries(variables);
  if (entries.length > MAX_VARIABLES) {
    violations.add("variables", `at most ${MAX_VARIABLES} entries`);
    return;
  }
  const allowed = Object.keys(spec.variables);
  for (const [key, value] of entries) {
    const field = `variables.${PLAIN_KEY.test(key) ? key : JSON.stringify(key.slice(0, 64))}`;
    const variable = spec.variables[key];
    if (!variable) {
      violations.add(field, `is not a variable of the ${name} template (allowed: ${allowed.join(", ") || "none"})`);
      continue;
    }
    if (codePoints(value) > variable.maxLength) violations.add(field, `at most ${variable.maxLength} characters`);
    else if ((variable.multiline ? CONTROL_CHARS_EXCEPT_LINES : CONTROL_CHARS).test(value)) {
      violations.add(field, variable.multiline ? "must not contain control characters" : "must not contain line breaks or control characters");
    } else if (value !== "" && variable.check) {
      const problem = variable.check(value);
      if (problem) violations.add(field, problem);
    }
  }
  for (const [key, variable] of Object.entries(spec.variables)) {
    if (variable.required && !variables[key]) violations.add(`variables.${key}`, `is required by the ${name} template`);
  }
  spec.refine?.(variables, violations);
}

export interface RenderedEmail {
  subject: string;
  html: string;
  text: string;
}

export interface TemplateContext {
  userName: string;
  userEmail: string;
  variables: Record<string, string>;
}

const noEscape = { escape: (value: unknown) => String(value) };

/** The parsed templates, loaded once at start-up so that a broken file stops the service before it serves. */
export class EmailTemplates {
  private constructor(private readonly sources: Record<TemplateName, { html: string; text: string }>) {}

  static async load(dir = DEFAULT_TEMPLATES_DIR): Promise<EmailTemplates> {
    const entries = await Promise.all(
      TEMPLATE_NAMES.map(async (name) => {
        const [html, text] = await Promise.all([
          readFile(`${dir}/${name}.html.mustache`, "utf8"),
          readFile(`${dir}/${name}.txt.mustache`, "utf8"),
        ]);
        // Raw tags would put unescaped values into HTML.
        if (/\{\{\s*[{&]/.test(html)) throw new Error(`${name}.html.mustache must not use unescaped {{{ }}} or {{& }} tags`);
        Mustache.parse(html);
        Mustache.parse(text);
        return [name, { html, text }] as const;
      }),
    );
    return new EmailTemplates(Object.fromEntries(entries) as Record<TemplateName, { html: string; text: string }>);
  }

  /** Renders the three parts; the context must have passed checkVariables. */
  render(name: TemplateName, context: TemplateContext): RenderedEmail {
    const spec = TEMPLATES[name];
    const view = {
      ...context.variables,
      user_name: context.userName,
      user_email: context.userEmail,
      ...spec.derive?.(context.variables),
    };
    const source = this.sources[name];
    return {
      subject: spec.subject(context.variables),
      html: Mustache.render(source.html, view),
      text: Mustache.render(source.text, view, undefined, noEscape),
    };
  }
}

function formatInstant(value: string): string {
  const date = new Date(value);
  return `${date.toISOString().slice(0, 16).replace("T", " ")} UTC`;
}

/** Length in characters (code points), not UTF-16 units. */
export function codePoints(value: string): number {
  let n = 0;
  for (const _ of value) n++;
  return n;
}

function shorten(value: string, max: number): string {
  const chars = Array.from(value);
  return chars.length <= max ? value : `${chars.slice(0, max - 1).join("")}…`;
}
