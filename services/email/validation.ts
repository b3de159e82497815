/** Checks a SendEmailRequest and turns it into the email the domain sends, listing every bad field at once. */
import { EmailType, type SendEmailRequest } from "@mcsv/sdk";
import { z } from "zod";
import { Violations } from "../shared/errors.js";
import { checkVariables, codePoints, CONTROL_CHARS, TEMPLATES, type TemplateName } from "./templates.js";

export interface EmailRequest {
  userId: string;
  userName: string;
  userEmail: string;
  template: TemplateName;
  variables: Record<string, string>;
  idempotencyKey: string;
}

export const TEMPLATE_OF_TYPE: Partial<Record<EmailType, TemplateName>> = {
  [EmailType.WELCOME]: "welcome",
  [EmailType.NOTIFICATION]: "notification",
  [EmailType.CONVERSION_COMPLETE]: "conversion_complete",
};

/** Low-cardinality name of an email type for metrics and logs, valid or not. */
export function typeLabel(type: EmailType): string {
  return TEMPLATE_OF_TYPE[type] ?? (type === EmailType.UNSPECIFIED ? "unspecified" : "unknown");
}

const email = z.email();
/** Printable ASCII without surrounding spaces: it travels as an HTTP header (Idempotency-Key) to the provider. */
const IDEMPOTENCY_KEY = /^[\x21-\x7E](?:[\x20-\x7E]*[\x21-\x7E])?$/;

export function validateSendEmail(req: SendEmailRequest): EmailRequest {
  const v = new Violations();
  const template = TEMPLATE_OF_TYPE[req.emailType];

  v.check(codePoints(req.userId) <= 200 && !CONTROL_CHARS.test(req.userId), "userId", "at most 200 characters, without control characters");

  if (codePoints(req.userName) > 200) v.add("userName", "at most 200 characters");
  else if (CONTROL_CHARS.test(req.userName)) v.add("userName", "must not contain line breaks or control characters");
  else if (template && TEMPLATES[template].requiresUserName && req.userName.trim() === "") v.add("userName", `is required by the ${template} template`);

  if (req.userEmail === "") v.add("userEmail", "is required");
  else v.check(req.userEmail.length <= 254 && email.safeParse(req.userEmail).success, "userEmail", "must be a valid email address");

  if (req.emailType === EmailType.UNSPECIFIED) v.add("emailType", "must be set");
  else if (!template) v.add("emailType", `unknown email type ${req.emailType}`);

  if (req.idempotencyKey === "") v.add("idempotencyKey", "is required");
  else v.check(req.idempotencyKey.length <= 200 && IDEMPOTENCY_KEY.test(req.idempotencyKey), "idempotencyKey", "1 to 200 printable ASCII characters");

  if (template) checkVariables(template, req.variables, v);
  v.throwIfAny();

  return {
    userId: req.userId,
    userName: req.userName.trim(),
    userEmail: req.userEmail,
    template: template!,
    variables: { ...req.variables },
    idempotencyKey: req.idempotencyKey,
  };
}
