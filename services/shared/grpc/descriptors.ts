/**
 * The schema a server reflects: the files of the services it mounts and, transitively, every file they import
 * (google/protobuf/timestamp.proto and the like), indexed by file name, by fully qualified symbol and by extension.
 * Built once from the descriptors that protoc-gen-es embeds in the generated code.
 */
import { toBinary, type DescEnum, type DescExtension, type DescFile, type DescMessage, type DescService } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";

export interface DescriptorIndex {
  /** The fully qualified names of the services, in the order given. */
  readonly serviceNames: string[];
  /** The file of that path, or undefined. */
  fileByName(name: string): DescFile | undefined;
  /** The file that defines a service, method, message, field, oneof, enum, enum value or extension. */
  fileContainingSymbol(symbol: string): DescFile | undefined;
  /** The file that defines the extension of a message with that field number. */
  fileContainingExtension(extendee: string, number: number): DescFile | undefined;
  /** The field numbers of the known extensions of a message, sorted; undefined when the message is unknown. */
  extensionNumbersOf(extendee: string): number[] | undefined;
  /** A file and every file it imports, transitively, each once, the file first; each a serialized FileDescriptorProto. */
  encodedWithDependencies(file: DescFile): Uint8Array[];
}

export function descriptorIndex(services: DescService[]): DescriptorIndex {
  const files = new Map<string, DescFile>();
  const symbols = new Map<string, DescFile>();
  const extensions = new Map<string, DescExtension[]>();
  const encoded = new Map<DescFile, Uint8Array>();

  const addExtension = (extension: DescExtension) => {
    symbols.set(extension.typeName, extension.file);
    const list = extensions.get(extension.extendee.typeName) ?? [];
    extensions.set(extension.extendee.typeName, [...list, extension]);
  };
  const addEnum = (desc: DescEnum, scope: string) => {
    symbols.set(desc.typeName, desc.file);
    // An enum value's name is scoped like the enum itself, not inside it.
    for (const value of desc.values) symbols.set(scope ? `${scope}.${value.name}` : value.name, desc.file);
  };
  const addMessage = (message: DescMessage) => {
    symbols.set(message.typeName, message.file);
    for (const field of message.fields) symbols.set(`${message.typeName}.${field.name}`, message.file);
    for (const oneof of message.oneofs) symbols.set(`${message.typeName}.${oneof.name}`, message.file);
    for (const nested of message.nestedMessages) addMessage(nested);
    // The synthetic entry message of a map field is in the descriptor, though not among nestedMessages.
    for (const entry of message.proto.nestedType) if (entry.options?.mapEntry) symbols.set(`${message.typeName}.${entry.name}`, message.file);
    for (const nested of message.nestedEnums) addEnum(nested, message.typeName);
    for (const nested of message.nestedExtensions) addExtension(nested);
  };
  const addFile = (file: DescFile) => {
    if (files.has(file.proto.name)) return;
    files.set(file.proto.name, file);
    for (const service of file.services) {
      symbols.set(service.typeName, file);
      for (const method of service.methods) symbols.set(`${service.typeName}.${method.name}`, file);
    }
    for (const message of file.messages) addMessage(message);
    for (const desc of file.enums) addEnum(desc, file.proto.package);
    for (const extension of file.extensions) addExtension(extension);
    for (const dependency of file.dependencies) addFile(dependency);
  };
  for (const service of services) addFile(service.file);

  const encode = (file: DescFile): Uint8Array => {
    let bytes = encoded.get(file);
    if (!bytes) encoded.set(file, (bytes = toBinary(FileDescriptorProtoSchema, file.proto)));
    return bytes;
  };
  const isMessage = (name: string) => {
    const file = symbols.get(name);
    const found = (messages: DescMessage[]): boolean => messages.some((m) => m.typeName === name || found(m.nestedMessages));
    return file !== undefined && found(file.messages);
  };

  return {
    serviceNames: services.map((service) => service.typeName),
    fileByName: (name) => files.get(name),
    fileContainingSymbol: (symbol) => symbols.get(symbol.replace(/^\./, "")),
    fileContainingExtension: (extendee, number) => extensions.get(extendee)?.find((extension) => extension.number === number)?.file,
    extensionNumbersOf: (extendee) =>
      isMessage(extendee) ? (extensions.get(extendee) ?? []).map((extension) => extension.number).sort((a, b) => a - b) : undefined,
    encodedWithDependencies(file) {
      const order: DescFile[] = [];
      const visit = (f: DescFile) => {
        if (order.includes(f)) return;
        order.push(f);
        f.dependencies.forEach(visit);
      };
      visit(file);
      return order.map(encode);
    },
  };
}
