/**
 * A @grpc/grpc-js client with its own generic Client (no generated stubs, no proto-loader): paths and hand-written
 * (de)serializers from the protobuf-es schemas, as any gRPC client in another language would see the server.
 */
import { fromBinary, toBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import grpc from "@grpc/grpc-js";

export { grpc };

/** The serializer and deserializer of a message, for grpc-js. */
export function codec<Desc extends DescMessage>(schema: Desc): { serialize: (value: MessageShape<Desc>) => Buffer; deserialize: (bytes: Buffer) => MessageShape<Desc> } {
  return {
    serialize: (value) => Buffer.from(toBinary(schema, value)),
    deserialize: (bytes) => fromBinary(schema, bytes),
  };
}

/** A plaintext (h2c) grpc-js client of 127.0.0.1:port. */
export function grpcJsClient(port: number): grpc.Client {
  return new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
}

/** A unary call: the answer, or the grpc-js error (with its numeric `code`). */
export function unary<I extends DescMessage, O extends DescMessage>(
  client: grpc.Client,
  path: string,
  input: I,
  output: O,
  request: MessageShape<I>,
  metadata: grpc.Metadata = new grpc.Metadata(),
): Promise<MessageShape<O>> {
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest(path, codec(input).serialize, codec(output).deserialize, request, metadata, (error, response) =>
      error || !response ? reject(error ?? new Error("no response")) : resolve(response),
    );
  });
}
