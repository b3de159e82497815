/**
 * Development delivery: each email becomes one RFC 5322 `.eml` file (multipart/alternative, text and HTML) in the
 * outbox directory, readable by any mail client. The file is named after a hash of the idempotency key, and is
 * published with a hard link from a temporary file, which fails when the name exists: a repeated key returns the
 * same id and writes nothing, even when two sends race.
 */
import { createHash, randomUUID } from "node:crypto";
import { access, link, mkdir, rename, unlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import MailComposer from "nodemailer/lib/mail-composer";
import { describeError } from "../shared/errors.js";
import type { Mailer, OutgoingEmail } from "./mailer.js";

export class OutboxMailer implements Mailer {
  readonly transport = "outbox";

  constructor(
    readonly dir: string,
    private readonly now: () => Date = () => new Date(),
  ) {}

  /** Id of the email sent with `idempotencyKey`; also the file's name without `.eml`. */
  static emailId(idempotencyKey: string): string {
    return `outbox-${createHash("sha256").update(idempotencyKey).digest("hex").slice(0, 32)}`;
  }

  fileOf(id: string): string {
    return join(this.dir, `${id}.eml`);
  }

  async send(email: OutgoingEmail, idempotencyKey: string): Promise<{ id: string }> {
    const id = OutboxMailer.emailId(idempotencyKey);
    if (await exists(this.fileOf(id))) return { id };
    const message = await new MailComposer({
      from: email.from,
      to: email.to,
      subject: email.subject,
      text: email.text,
      html: email.html,
      date: this.now(),
      messageId: `<${id}@outbox.mcsv.invalid>`,
      headers: { "X-Mcsv-Email-Type": email.type },
      // Only the strings given here go into the message: no file or URL is ever read.
      disableFileAccess: true,
      disableUrlAccess: true,
    })
      .compile()
      .build();
    try {
      await this.publish(id, message);
    } catch (error) {
      throw new ConnectError(`cannot write to the outbox: ${describeError(error)}`, Code.Unavailable);
    }
    return { id };
  }

  async check(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    const probe = join(this.dir, `.ready-${randomUUID()}`);
    await writeFile(probe, "");
    await unlink(probe);
  }

  private async publish(id: string, message: Buffer): Promise<void> {
    const target = this.fileOf(id);
    const temp = join(this.dir, `.${id}.${randomUUID()}.tmp`);
    await writeFile(temp, message, { flag: "wx" });
    try {
      await link(temp, target);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === "EEXIST") return; // Sent before under the same key.
      // A file system without hard links: rename is still atomic, at worst two racing sends write the same name twice.
      if (code !== "EPERM" && code !== "ENOTSUP" && code !== "EOPNOTSUPP") throw error;
      await rename(temp, target);
      return;
    } finally {
      await unlink(temp).catch(() => undefined);
    }
  }
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}
